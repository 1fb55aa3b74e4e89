"""The Falcon resources, one folder or module per API family: store (the mModelStore
registry), openai, kserve, health and metrics. Each declares its request bodies as
pydantic models; openapi.py builds the OpenAPI document from them.

May import everything below it: http, inference, registry, settings, shared.
"""
