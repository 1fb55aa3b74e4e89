"""HTTP plumbing that every API family shares: auth, request bodies, errors and their
shapes, multipart, Server-Sent Events, disconnect detection and the JSON writer.

May import: Falcon, shared and settings. Not api, inference or registry.
"""
