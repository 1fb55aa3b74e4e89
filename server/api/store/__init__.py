"""The model registry (the mimOE mModelStore API) at /store/v1 and /mimik-ai/store/v1."""
