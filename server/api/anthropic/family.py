"""The Anthropic Messages API's declaration, at /v1/messages. Its clients send the key as
`x-api-key` (http/auth.py reads both)."""
from __future__ import annotations

from modelyard.server.api.anthropic import schema as s
from modelyard.server.api.anthropic.format import PING, error_body, error_event
from modelyard.server.api.anthropic.routes import CountTokens, Messages
from modelyard.server.api.family import JSON, SSE, Context, Family, ModelIn, Op, Route, Streams, default_stream_errors
from modelyard.server.http.routes import Guard

ERROR_SCHEMA = {"type": "object", "required": ["type", "error"], "properties": {
    "type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"],
                                          "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}}


def _resources(ctx: Context) -> dict:
    return {"/messages": Messages(ctx.dispatcher, ctx.settings),
            "/messages/count_tokens": CountTokens(ctx.dispatcher, ctx.settings)}


_MODEL = ModelIn(body=("model",))
FAMILY = Family(
    name="anthropic",
    prefixes=("/v1",),
    error_body=error_body,
    error_schema=ERROR_SCHEMA,
    resources=_resources,
    keepalives={SSE: PING},
    stream_errors={**default_stream_errors(), SSE: lambda body, code, message: error_event(code, message)},
    routes=(
        Route("/messages", Guard.KEY, model=_MODEL, conversation=True, streams=Streams(), ops=(
            Op("post", "Anthropic Messages (streamed as SSE with stream: true)", body=s.MessagesBody,
               responses={200: {JSON: s.MessageOut, SSE: {"type": "string"}}},
               errors=(400, 401, 403, 404, 413, 499, 503)),)),
        Route("/messages/count_tokens", Guard.KEY, model=_MODEL, ops=(
            Op("post", "The prompt's length in tokens", body=s.CountTokensBody,
               responses={200: {JSON: s.TokenCount}}, errors=(400, 401, 403, 404, 413, 503)),)),
    ),
)
