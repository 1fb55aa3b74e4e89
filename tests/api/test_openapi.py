"""The OpenAPI document covers every route the app serves, and bodies are validated by their models."""
from __future__ import annotations

import json

import falcon.inspect
import httpx
import pytest

from modelyard.server.api.families import FAMILIES
from modelyard.server.api.openapi import build_document
from modelyard.server.app import create_app
from modelyard.server.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings(store=tmp_path_factory.mktemp("store")))


def _served(app) -> set[tuple[str, str]]:
    out = set()
    for route in falcon.inspect.inspect_routes(app):
        path = route.path.replace("{model_id}", "{model_id}")
        for m in route.methods:
            if not m.internal:
                out.add((m.method.lower(), path))
    return out


def test_every_route_is_documented_and_nothing_else(app):
    doc = build_document(FAMILIES, "test", strict=True)
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert _served(app) == documented


def test_every_body_and_response_has_a_schema():
    doc = build_document(FAMILIES, "test", strict=True)
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody")
            if body:
                for content in body["content"].values():
                    if content["schema"].get("format") == "binary":
                        continue  # raw bytes (a blob)
                    ref = content["schema"].get("$ref", "")
                    assert ref.rsplit("/", 1)[-1] in schemas, (method, path)
            assert op["responses"], (method, path)
            if path.startswith(("/v1/", "/mimik-ai/openai")):
                assert "400" in op["responses"] or method in ("get", "delete"), (method, path)


def test_served_document_is_json_and_versioned(fuzz_server):
    r = httpx.get(fuzz_server.url + "/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"]
    assert "/v1/chat/completions" in doc["paths"] and "/store/v1/models" in doc["paths"]


NESTED = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = ('{"a":' * 5000 + "1" + "}" * 5000).encode()


@pytest.mark.parametrize("path", ["/store/v1/models", "/v1/chat/completions", "/v1/embeddings",
                                  "/v1/models", "/v2/models/clf/infer", "/store/v1/models/chat/download"])
@pytest.mark.parametrize("body", [NESTED, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_json_is_400(fuzz_server, path, body):
    r = httpx.post(fuzz_server.url + path, content=body, headers={**fuzz_server.auth, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nested too deeply" in json.dumps(r.json())
