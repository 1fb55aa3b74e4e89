"""The Mullama daemon's API: its own routes (the three it shares with Ollama, /api/generate,
/api/chat and /api/embeddings, are Ollama's and answer both shapes). Errors are
Mullama's {"error": {"message", "type", "code"}}."""
from __future__ import annotations

from modelyard.server.api.family import GGUF_KINDS, JSON, NDJSON, ClusterModel, Context, Family, ModelIn, Op, Route
from modelyard.server.api.mullama import schema as s
from modelyard.server.api.mullama.catalogue import alias
from modelyard.server.api.mullama.errors import ERROR_SCHEMA, error_body
from modelyard.server.api.mullama.routes import resources
from modelyard.server.http.routes import Guard


def _resources(ctx: Context) -> dict:
    return resources(ctx.dispatcher, ctx.settings, ctx.metrics)


def _cluster_models(models: list[ClusterModel], query: dict) -> dict:
    """The cluster router's /api/models; the path and parameter count are the pods' to know."""
    return {"models": [{"alias": alias(m.name), "path": None, "parameters": None,
                        "context_size": (m.gguf or {}).get("initContextSize"),
                        "gpu_layers": int((m.gguf or {}).get("initGpuLayerSize") or 0), "is_default": False,
                        "active_requests": m.in_flight, "loaded": m.running, "kind": m.kind}
                       for m in models if m.downloaded and m.kind in GGUF_KINDS]}


_NAME = ({"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "The model's alias (name:tag) or registry id."},)
_BY_NAME = ModelIn(path="name")
FAMILY = Family(
    name="mullama",
    prefixes=("",),
    error_body=error_body,
    error_schema=ERROR_SCHEMA,
    resources=_resources,
    routes=(
        Route("/api/models", Guard.KEY, lists_models=_cluster_models, ops=(
            Op("get", "Every ready GGUF model, loaded or not", responses={200: {JSON: s.MullamaModelList}},
               errors=(401, 403)),)),
        Route("/api/models/{name}", Guard.KEY, model=_BY_NAME, ops=(
            Op("get", "A model, with its architecture, vocabulary size and capabilities from its GGUF",
               responses={200: {JSON: s.MullamaModelDetail}}, errors=(400, 401, 403, 404), params=_NAME),
            Op("delete", "Unload a model and delete it from the store", responses={200: {JSON: s.MullamaStatusResult}},
               errors=(400, 401, 403, 404, 409), params=_NAME))),
        Route("/api/models/{name}/unload", Guard.KEY, model=_BY_NAME, ops=(
            Op("post", "Unload a model (409 when it is not loaded)", responses={200: {JSON: s.MullamaStatusResult}},
               errors=(400, 401, 403, 404, 409), params=_NAME),)),
        Route("/api/models/pull", Guard.KEY, model=ModelIn(body=("name",)), ops=(
            Op("post", "Pull a catalogue model or hf:org/repo[:file] (NDJSON progress with stream: true)",
               body=s.MullamaPullBody, responses={200: {JSON: s.MullamaPullResult, NDJSON: {"type": "string"}}},
               errors=(400, 401, 403, 404, 409, 413, 502)),)),
        Route("/api/models/load", Guard.KEY, model=ModelIn(body=("alias",)), ops=(
            Op("post", "Load a model with its context size and GPU layers (409 when it is loaded with them "
               "already); `path` registers a GGUF file where it lies", body=s.MullamaLoadBody,
               responses={200: {JSON: s.MullamaLoadResult}}, errors=(400, 401, 403, 404, 409, 413, 500)),)),
        Route("/api/system/status", Guard.KEY, ops=(
            Op("get", "Version, uptime, models, requests, tokens and memory",
               responses={200: {JSON: s.MullamaSystemStatus}}, errors=(401, 403)),)),
        Route("/api/defaults", Guard.KEY, ops=(
            Op("get", "The catalogue of small useful GGUF models", responses={200: {JSON: {
                "type": "array", "items": s.MullamaDefaultEntry.model_json_schema()}}}, errors=(401, 403)),)),
        Route("/api/defaults/{name}/use", Guard.KEY, model=_BY_NAME, ops=(
            Op("post", "Pull a catalogue model, load it, make it the default", responses={200: {JSON: s.MullamaLoadResult}},
               errors=(400, 401, 403, 404, 409, 500, 502), params=_NAME),)),
        Route("/status", Guard.OPEN, ops=(
            Op("get", "The daemon's status", responses={200: {JSON: s.MullamaStatus}}, errors=()),)),
        Route("/health", Guard.OPEN, ops=(
            Op("get", "200 while serving, 503 while the --preload models load",
               responses={200: {JSON: {"type": "object"}}, 503: {JSON: {"type": "object"}}}, errors=()),)),
    ),
)
