"""The OpenAI API's declaration: at /v1 and at /mimik-ai/openai/v1 (mimOE's path)."""
from __future__ import annotations

from modelyard.server.api.family import JSON, SSE, ClusterModel, Context, Family, ModelIn, Op, Route, Streams, model_param
from modelyard.server.api.openai.format import model_entry
from modelyard.server.api.openai import routes as r
from modelyard.server.api.openai import schema as s
from modelyard.server.http import sse
from modelyard.server.http.errors import BAD_KEY
from modelyard.server.http.routes import Guard

# OpenAI's error types by status.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message", "type"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "type": {"type": "string"}}}}}


def error_body(code: int, message: str, kind: str | None = None) -> dict:
    """mimOE's {"error": {"code", "message"}} with OpenAI's `type`; a wrong key is OpenAI's
    `invalid_api_key` (OpenAI puts it in `code`, which mimOE's document makes the status)."""
    type_ = BAD_KEY if kind == BAD_KEY else _TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return {"error": {"code": code, "message": message, "type": type_}}


def _resources(ctx: Context) -> dict:
    d, settings = ctx.dispatcher, ctx.settings
    return {
        "/chat/completions": r.ChatCompletions(d, settings),
        "/completions": r.Completions(d, settings),
        "/embeddings": r.Embeddings(d, settings),
        "/models": r.Models(d, settings),
        "/models/{model_id}": r.ModelItem(d, settings),
    }


def _cluster_models(models: list[ClusterModel], query: dict) -> dict:
    """The cluster router's /v1/models: every Model whose file is in its cache."""
    return {"object": "list", "data": [model_entry(m.name, m.created_ms) for m in models if m.downloaded]}


_MODEL = ModelIn(body=("model",))
FAMILY = Family(
    name="openai",
    prefixes=("/v1", "/mimik-ai/openai/v1"),
    error_prefixes=("/v1", "/mimik-ai/openai/v1"),
    error_body=error_body,
    error_schema=ERROR_SCHEMA,
    resources=_resources,
    keepalives={SSE: sse.PING},
    routes=(
        Route("/chat/completions", Guard.KEY, model=_MODEL, conversation=True, streams=Streams(), ops=(
            Op("post", "Chat completion (streamed as SSE with stream: true)", body=s.ChatCompletionBody,
               responses={200: {JSON: s.ChatCompletion, SSE: {"type": "string"}}},
               errors=(400, 401, 403, 404, 413, 499, 503)),)),
        Route("/completions", Guard.KEY, model=_MODEL, conversation=True, streams=Streams(), ops=(
            Op("post", "Text completion", body=s.CompletionBody,
               responses={200: {JSON: s.Completion, SSE: {"type": "string"}}},
               errors=(400, 401, 403, 404, 413, 499, 503)),)),
        Route("/embeddings", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Embeddings", body=s.EmbeddingBody, responses={200: {JSON: s.EmbeddingList}},
               errors=(400, 401, 403, 404, 413, 503)),)),
        Route("/models", Guard.KEY, model=_MODEL, lists_models=_cluster_models, ops=(
            Op("get", "The loaded models", responses={200: {JSON: s.ModelEntryList}}, errors=(401, 403)),
            Op("post", "Load a model now", body=s.LoadModelBody, responses={200: {JSON: s.ModelEntry}},
               errors=(400, 401, 403, 404, 413, 500)))),
        Route("/models/{model_id}", Guard.KEY, model=ModelIn(path="model_id"), ops=(
            Op("get", "One loaded model", responses={200: {JSON: s.ModelEntry}}, errors=(401, 403, 404),
               params=(model_param(),)),
            Op("delete", "Unload a model (its file stays)", responses={200: {JSON: s.ModelDeleted}},
               errors=(401, 403, 404), params=(model_param(),)))),
    ),
)
