"""The OpenAPI 3.1 document of every route, at GET /openapi.json, built from the request and
response models that each API family declares.

The table below is the list of operations; a test compares it with the routes Falcon
serves, so a route cannot be added without its entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import falcon
from pydantic import BaseModel

from modelyard.server.api.anthropic import schema as anthropic
from modelyard.server.api.kserve import codec as kserve
from modelyard.server.api.mullama import schema as mullama
from modelyard.server.api.ollama import schema as ollama
from modelyard.server.api.openai import schema as openai
from modelyard.server.api.silicon import schema as silicon
from modelyard.server.api.store import schema as store
from modelyard.server.http.errors import is_mullama

JSON = "application/json"
SSE = "text/event-stream"
OCTETS = "application/octet-stream"
NDJSON = "application/x-ndjson"

STORE_PREFIXES = ("/store/v1", "/mimik-ai/store/v1")
OPENAI_PREFIXES = ("/v1", "/mimik-ai/openai/v1")

# Each family's error body.
_STORE_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}}}
_OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message", "type"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "type": {"type": "string"}}}}}
_KSERVE_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_MULLAMA_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "code"],
    "properties": {"message": {"type": "string"}, "code": {"type": "string"}, "type": {
        "enum": ["invalid_request", "not_found", "model_error", "conflict", "internal_error", "overloaded"]}}}}}
_ANTHROPIC_ERROR = {"type": "object", "required": ["type", "error"], "properties": {
    "type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"],
                                          "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    tag: str
    summary: str
    body: type[BaseModel] | None = None
    body_type: str = JSON
    # status -> {content type: model or JSON schema}
    responses: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 404)
    query: tuple[dict, ...] = ()


def _id_param() -> dict:
    return {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The model id."}


def _digest_param() -> dict:
    return {"name": "digest", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "sha256:<64 hex digits>"}


def _name_param() -> dict:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The model's alias (name:tag) or registry id."}


def _mullama_operations() -> list[Op]:
    name = (_name_param(),)
    return [
        Op("get", "/api/models", "mullama", "Every ready GGUF model, loaded or not",
           responses={200: {JSON: mullama.MullamaModelList}}, errors=(401, 403)),
        Op("get", "/api/models/{name}", "mullama", "A model, with its architecture, vocabulary size and "
           "capabilities from its GGUF", responses={200: {JSON: mullama.MullamaModelDetail}},
           errors=(400, 401, 403, 404), query=name),
        Op("delete", "/api/models/{name}", "mullama", "Unload a model and delete it from the store",
           responses={200: {JSON: mullama.MullamaStatusResult}}, errors=(400, 401, 403, 404, 409), query=name),
        Op("post", "/api/models/{name}/unload", "mullama", "Unload a model (409 when it is not loaded)",
           responses={200: {JSON: mullama.MullamaStatusResult}}, errors=(400, 401, 403, 404, 409), query=name),
        Op("post", "/api/models/pull", "mullama", "Pull a catalogue model or hf:org/repo[:file] (NDJSON "
           "progress with stream: true)", body=mullama.MullamaPullBody,
           responses={200: {JSON: mullama.MullamaPullResult, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 409, 413, 502)),
        Op("post", "/api/models/load", "mullama", "Load a model with its context size and GPU layers (409 when "
           "it is loaded with them already); `path` registers a GGUF file where it lies", body=mullama.MullamaLoadBody,
           responses={200: {JSON: mullama.MullamaLoadResult}}, errors=(400, 401, 403, 404, 409, 413, 500)),
        Op("get", "/api/system/status", "mullama", "Version, uptime, models, requests, tokens and memory",
           responses={200: {JSON: mullama.MullamaSystemStatus}}, errors=(401, 403)),
        Op("get", "/api/defaults", "mullama", "The catalogue of small useful GGUF models",
           responses={200: {JSON: {"type": "array", "items": mullama.MullamaDefaultEntry.model_json_schema()}}},
           errors=(401, 403)),
        Op("post", "/api/defaults/{name}/use", "mullama", "Pull a catalogue model, load it, make it the default",
           responses={200: {JSON: mullama.MullamaLoadResult}}, errors=(400, 401, 403, 404, 409, 500, 502), query=name),
        Op("get", "/status", "mullama", "The daemon's status", responses={200: {JSON: mullama.MullamaStatus}}, errors=()),
        Op("get", "/health", "mullama", "200 while serving, 503 while the --preload models load",
           responses={200: {JSON: {"type": "object"}}, 503: {JSON: {"type": "object"}}}, errors=()),
    ]


def _silicon_operations() -> list[Op]:
    e, s = "/api/engine", silicon
    status = {200: {JSON: s.SiliconStatusOut}}
    return [
        Op("get", f"{e}/models", "silicon", "Every model: status, download progress, path, size",
           responses={200: {JSON: s.SiliconModelListOut}}, errors=(401, 403)),
        Op("post", f"{e}/models/download", "silicon", "Download a Hugging Face repo's GGUF in the background",
           body=s.SiliconDownloadBody, responses={202: {JSON: s.SiliconStatusOut}},
           errors=(400, 401, 403, 404, 409, 413)),
        Op("post", f"{e}/models/delete", "silicon", "Delete a model (a registered file stays on disk)",
           body=s.SiliconModelRef, responses=status, errors=(400, 401, 403, 404, 409, 413)),
        Op("post", f"{e}/models/register", "silicon", "Register a GGUF file, or a folder with its projector, "
           "where it lies", body=s.SiliconRegisterBody, responses=status, errors=(400, 401, 403, 409, 413)),
        Op("post", f"{e}/models/scan", "silicon", "Register every valid GGUF under a folder; say what was skipped",
           body=s.SiliconScanBody, responses={200: {JSON: s.SiliconScanOut}}, errors=(400, 401, 403, 413)),
        Op("get", f"{e}/models/active", "silicon", "The model this API loaded last, or {\"model\": null}",
           responses={200: {JSON: s.SiliconActiveOut}}, errors=(401, 403)),
        Op("post", f"{e}/models/load", "silicon", "Load a model (kv_quantization 4 or 8: a quantized KV cache)",
           body=s.SiliconLoadBody, responses={200: {JSON: s.SiliconLoadOut}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        Op("post", f"{e}/models/unload", "silicon", "Unload a model (the active one without a body)",
           body=s.SiliconUnloadBody, responses=status, errors=(400, 401, 403, 413)),
        Op("get", f"{e}/models/adapters", "silicon", "Fine-tuned adapters (none: fine-tuning is not served yet)",
           responses={200: {JSON: s.SiliconAdapterList}}, errors=(401, 403)),
        Op("get", f"{e}/models/{{model_id}}/format", "silicon", "The tokenizer's metadata from the GGUF",
           responses={200: {JSON: s.SiliconFormatOut}}, errors=(400, 401, 403, 404)),
        Op("post", f"{e}/chat", "silicon", "Chat, streamed as SSE {\"text\"} events and a final done event "
           "with the usage", body=s.SiliconChatBody, responses={200: {SSE: s.SiliconChatEvent}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        Op("post", f"{e}/chat/stop", "silicon", "Stop the chats being streamed (of one model when named)",
           body=s.SiliconStopBody, responses=status, errors=(400, 401, 403, 413)),
        Op("post", f"{e}/predict", "silicon", "A completion for inline suggestions, at the highest priority",
           body=s.SiliconPredictBody, responses={200: {JSON: s.SiliconPredictOut}},
           errors=(400, 401, 403, 404, 413, 499, 500, 503)),
    ]


def operations() -> list[Op]:
    ops: list[Op] = []
    for p in STORE_PREFIXES:
        ops += [
            Op("get", f"{p}/models", "registry", "List models", responses={200: {JSON: store.ModelList}},
               query=({"name": "kind", "in": "query", "schema": {"type": "string", "enum": list(store.KINDS)}},
                      {"name": "ready", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}),
               errors=(400,)),
            Op("post", f"{p}/models", "registry", "Create a model (200 when it exists: updated)",
               body=store.CreateModel, responses={200: {JSON: store.ModelView}, 201: {JSON: store.ModelView}},
               errors=(400, 401, 403, 409, 413)),
            Op("put", f"{p}/models", "registry", "Update a model's metadata", body=store.UpdateModel,
               responses={200: {JSON: store.ModelView}}, errors=(400, 401, 403, 404, 409, 413)),
            Op("get", f"{p}/models/{{model_id}}", "registry", "A model, or its file with ?alt=media (Range works)",
               responses={200: {JSON: store.ModelView, OCTETS: {"type": "string", "format": "binary"}},
                          206: {OCTETS: {"type": "string", "format": "binary"}}},
               query=({"name": "alt", "in": "query", "schema": {"type": "string", "enum": ["media"]}},),
               errors=(400, 404, 416)),
            Op("head", f"{p}/models/{{model_id}}", "registry", "A model's headers, or its file's with ?alt=media",
               responses={200: {}, 206: {}},
               query=({"name": "alt", "in": "query", "schema": {"type": "string", "enum": ["media"]}},),
               errors=(400, 404, 416)),
            Op("delete", f"{p}/models/{{model_id}}", "registry", "Delete a model and its files",
               responses={204: {}}, errors=(400, 401, 403, 404, 409)),
            Op("post", f"{p}/models/{{model_id}}/upload", "registry", "Upload the model's file (multipart)",
               body=store.UploadForm, body_type="multipart/form-data", responses={200: {JSON: store.ModelView}},
               errors=(400, 401, 403, 404, 409, 411, 413, 415)),
            Op("post", f"{p}/models/{{model_id}}/download", "registry",
               "Download the model's file from a URL or Hugging Face, with progress as Server-Sent Events",
               body=store.DownloadModel, responses={200: {SSE: store.DownloadProgress}},
               errors=(400, 401, 403, 404, 409, 413)),
        ]
    for p in OPENAI_PREFIXES:
        ops += [
            Op("post", f"{p}/chat/completions", "openai", "Chat completion (streamed as SSE with stream: true)",
               body=openai.ChatCompletionBody, responses={200: {JSON: openai.ChatCompletion, SSE: {"type": "string"}}},
               errors=(400, 401, 403, 404, 413, 499, 503)),
            Op("post", f"{p}/completions", "openai", "Text completion",
               body=openai.CompletionBody, responses={200: {JSON: openai.Completion, SSE: {"type": "string"}}},
               errors=(400, 401, 403, 404, 413, 499, 503)),
            Op("post", f"{p}/embeddings", "openai", "Embeddings", body=openai.EmbeddingBody,
               responses={200: {JSON: openai.EmbeddingList}}, errors=(400, 401, 403, 404, 413, 503)),
            Op("get", f"{p}/models", "openai", "The loaded models", responses={200: {JSON: openai.ModelEntryList}},
               errors=(401, 403)),
            Op("post", f"{p}/models", "openai", "Load a model now", body=openai.LoadModelBody,
               responses={200: {JSON: openai.ModelEntry}}, errors=(400, 401, 403, 404, 413, 500)),
            Op("get", f"{p}/models/{{model_id}}", "openai", "One loaded model",
               responses={200: {JSON: openai.ModelEntry}}, errors=(401, 403, 404)),
            Op("delete", f"{p}/models/{{model_id}}", "openai", "Unload a model (its file stays)",
               responses={200: {JSON: openai.ModelDeleted}}, errors=(401, 403, 404)),
        ]
    ops += [
        Op("post", "/v1/messages", "anthropic", "Anthropic Messages (streamed as SSE with stream: true)",
           body=anthropic.MessagesBody, responses={200: {JSON: anthropic.MessageOut, SSE: {"type": "string"}}},
           errors=(400, 401, 403, 404, 413, 499, 503)),
        Op("post", "/v1/messages/count_tokens", "anthropic", "The prompt's length in tokens",
           body=anthropic.CountTokensBody, responses={200: {JSON: anthropic.TokenCount}},
           errors=(400, 401, 403, 404, 413, 503)),
        Op("get", "/v2/models/{model_id}", "kserve", "Model metadata",
           responses={200: {JSON: kserve.ModelMetadataResponse}}, errors=(400, 401, 403, 404, 500)),
        Op("get", "/v2/models/{model_id}/ready", "kserve", "Model readiness (loads it when needed)",
           responses={200: {JSON: kserve.ModelReadyResponse}}, errors=(400, 401, 403, 404, 500)),
        Op("post", "/v2/models/{model_id}/infer", "kserve", "Inference", body=kserve.InferBody,
           responses={200: {JSON: kserve.InferResponse}}, errors=(400, 401, 403, 404, 413, 500)),
        Op("get", "/v2/health/live", "kserve", "Server liveness",
           responses={200: {JSON: {"type": "object", "properties": {"live": {"type": "boolean"}}}}}, errors=(401, 403)),
        Op("get", "/v2/health/ready", "kserve", "Server readiness",
           responses={200: {JSON: {"type": "object", "properties": {"ready": {"type": "boolean"}}}},
                      503: {JSON: {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
           errors=(401, 403)),
        Op("get", "/", "ollama", "Ollama is running (clients probe it)", responses={200: {"text/plain": {"type": "string"}}},
           errors=()),
        Op("head", "/", "ollama", "Ollama is running", responses={200: {}}, errors=()),
        Op("get", "/api/version", "ollama", "The server's version",
           responses={200: {JSON: {"type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}}},
           errors=(401, 403)),
        Op("get", "/api/tags", "ollama", "The models",
           responses={200: {JSON: {"type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}}},
           errors=(401, 403)),
        Op("get", "/api/show", "ollama", "A model's details (the Ollama Toolkit's form)",
           responses={200: {JSON: {"type": "object"}}},
           query=({"name": "name", "in": "query", "schema": {"type": "string"}},), errors=(400, 401, 403, 404)),
        Op("post", "/api/show", "ollama", "A model's details, template, parameters and GGUF metadata",
           body=ollama.ShowBody, responses={200: {JSON: {"type": "object"}}}, errors=(400, 401, 403, 404, 413)),
        Op("post", "/api/copy", "ollama", "A second name for a model's file (no bytes copied)",
           body=ollama.CopyBody, responses={200: {JSON: {"type": "object"}}}, errors=(400, 401, 403, 404, 409, 413)),
        Op("delete", "/api/delete", "ollama", "Delete a model (other names of its file keep it)",
           body=ollama.DeleteBody, responses={200: {JSON: {"type": "object"}}}, errors=(400, 401, 403, 404, 409, 413)),
        Op("post", "/api/pull", "ollama", "Pull a model from Hugging Face (hf.co/org/repo:quant) or an OCI "
           "registry (host/namespace/model:tag), with NDJSON progress", body=ollama.PullBody,
           responses={200: {JSON: {"type": "object"}, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 409, 413, 502)),
        Op("post", "/api/push", "ollama", "Push a model to the OCI registry its name names, with NDJSON progress",
           body=ollama.PullBody, responses={200: {JSON: {"type": "object"}, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 409, 413, 502)),
        Op("post", "/api/create", "ollama", "Create a model from a model or from blobs (system, template, "
           "parameters, quantize)", body=ollama.CreateBody,
           responses={200: {JSON: {"type": "object"}, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 409, 413)),
        Op("head", "/api/blobs/{digest}", "ollama", "Whether a blob is here (200) or not (404)",
           responses={200: {}, 404: {}}, errors=(400, 401, 403), query=(_digest_param(),)),
        Op("post", "/api/blobs/{digest}", "ollama", "Upload a blob; its sha256 must equal the digest",
           body_type=OCTETS, responses={201: {}}, errors=(400, 401, 403, 409, 411, 413),
           query=(_digest_param(),)),
        Op("get", "/api/ps", "ollama", "The loaded models",
           responses={200: {JSON: {"type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}}},
           errors=(401, 403)),
        Op("post", "/api/generate", "ollama", "Generate (NDJSON stream by default)", body=ollama.GenerateBody,
           responses={200: {JSON: {"type": "object"}, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        Op("post", "/api/chat", "ollama", "Chat (NDJSON stream by default)", body=ollama.ChatBody,
           responses={200: {JSON: {"type": "object"}, NDJSON: {"type": "string"}}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        Op("post", "/api/embed", "ollama", "Embeddings", body=ollama.EmbedBody,
           responses={200: {JSON: {"type": "object", "required": ["embeddings"]}}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        Op("post", "/api/embeddings", "ollama", "One embedding (the older form)", body=ollama.EmbeddingsBody,
           responses={200: {JSON: {"type": "object", "required": ["embedding"]}}},
           errors=(400, 401, 403, 404, 413, 500, 503)),
        *_mullama_operations(),
        *_silicon_operations(),
        Op("get", "/healthz", "health", "Liveness", responses={200: {JSON: {"type": "object"}}}, errors=()),
        Op("get", "/readyz", "health", "Readiness: the --preload models are loaded",
           responses={200: {JSON: {"type": "object"}}, 503: {JSON: {"type": "object"}}}, errors=()),
        Op("get", "/metrics", "health", "Prometheus metrics", responses={200: {"text/plain": {"type": "string"}}},
           errors=()),
        Op("get", "/openapi.json", "health", "This document", responses={200: {JSON: {"type": "object"}}},
           errors=()),
    ]
    return ops


def _error_schema(path: str) -> dict:
    if is_mullama(path):
        return _MULLAMA_ERROR
    if path.startswith("/v1/messages"):
        return _ANTHROPIC_ERROR
    if path.startswith(("/v2/", "/api/")):
        return _KSERVE_ERROR
    if path.startswith(OPENAI_PREFIXES):
        return _OPENAI_ERROR
    return _STORE_ERROR


def build_document(version: str, strict: bool = False) -> dict:
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
    for op in operations():
        item: dict[str, Any] = {"tags": [op.tag], "summary": op.summary, "responses": {}}
        params = ([_id_param()] if "{model_id}" in op.path else []) + list(op.query)
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
                "content": {JSON: {"schema": _error_schema(op.path)}},
            }
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Modelyard", "version": version,
                 "description": "The model registry (mimOE mModelStore API), the OpenAI API, the Anthropic Messages API, "
                                "KServe Open Inference Protocol v2, health and metrics."},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


class OpenApi:
    def __init__(self, document: dict):
        self.document = document

    def on_get(self, req, resp):
        resp.media = self.document


def add_routes(app: falcon.App, version: str) -> None:
    app.add_route("/openapi.json", OpenApi(build_document(version)))
