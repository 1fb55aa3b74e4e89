"""The OpenAPI 3.1 document of every route, at GET /openapi.json, built from the families'
declarations (api/family.py): each route's operations with their request and response
models, and the family's error shape. A test compares it with the routes Falcon serves.
"""
from __future__ import annotations

from typing import Any

import falcon

from modelyard.server.api.family import JSON, OCTETS, model_param


def build_document(families, version: str, strict: bool = False) -> dict:
    """The document. `strict` (the tests) refuses two models of one name; serving does not
    refuse to start over it."""
    components: dict[str, Any] = {}

    def schema_of(model_or_schema) -> dict:
        if isinstance(model_or_schema, dict):
            return model_or_schema
        schema = model_or_schema.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            add(name, sub)
        add(model_or_schema.__name__, schema)
        return {"$ref": f"#/components/schemas/{model_or_schema.__name__}"}

    def add(name: str, schema: dict) -> None:
        # Components are named after their classes: two families' classes of one name
        # would silently document one family's body with the other's schema.
        if components.setdefault(name, schema) != schema and strict:
            raise ValueError(f"two request or response models are both named {name!r}: rename one")

    paths: dict[str, dict] = {}
    for family in families:
        for path, route in family.templates():
            for op in route.ops:
                paths.setdefault(path, {})[op.method] = _operation(family, path, op, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Modelyard", "version": version,
                 "description": "The API families this server speaks: "
                                + ", ".join(f.name for f in families) + "."},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


def _operation(family, path: str, op, schema_of) -> dict:
    item: dict[str, Any] = {"tags": [family.name], "summary": op.summary, "responses": {}}
    params = list(op.params)
    if "{model_id}" in path and not any(p["name"] == "model_id" for p in params):
        params.insert(0, model_param())
    if params:
        item["parameters"] = params
    if op.body is not None or op.body_type == OCTETS:
        body = schema_of(op.body) if op.body is not None else {"type": "string", "format": "binary"}
        item["requestBody"] = {"required": True, "content": {op.body_type: {"schema": body}}}
    for status, contents in op.responses.items():
        item["responses"][str(status)] = {
            "description": falcon.code_to_http_status(status),
            **({"content": {ct: {"schema": schema_of(s)} for ct, s in contents.items()}} if contents else {}),
        }
    for status in op.errors:
        item["responses"][str(status)] = {
            "description": falcon.code_to_http_status(status),
            "content": {JSON: {"schema": family.error_schema}},
        }
    return item


class OpenApi:
    def __init__(self, document: dict):
        self.document = document

    def on_get(self, req, resp):
        resp.media = self.document

