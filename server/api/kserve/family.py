"""KServe's Open Inference Protocol v2 (REST) for onnx models, at /v2. Its errors are
`{"error": "..."}` (the protocol's shape)."""
from __future__ import annotations

from modelyard.server.api.family import (JSON, MESSAGE_ERROR_SCHEMA, Context, Family, ModelIn, Op, Route, message_error_body,
                                         model_param)
from modelyard.server.api.health import Live, Ready
from modelyard.server.api.kserve import codec
from modelyard.server.api.kserve.routes import Infer, ModelMetadata, ModelReady
from modelyard.server.http.routes import Guard

def _resources(ctx: Context) -> dict:
    d = ctx.dispatcher
    return {
        "/models/{model_id}": ModelMetadata(d),
        "/models/{model_id}/ready": ModelReady(d),
        "/models/{model_id}/infer": Infer(d, ctx.settings),
        # The server's liveness and readiness in the protocol's shapes (api/health.py).
        "/health/live": Live({"live": True}),
        "/health/ready": Ready(ctx.manager, {"ready": True}, {"ready": False}),
    }


_MODEL = ModelIn(path="model_id")
_ID = (model_param(),)
_READY = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
FAMILY = Family(
    name="kserve",
    prefixes=("/v2",),
    error_prefixes=("/v2",),
    error_body=message_error_body,
    error_schema=MESSAGE_ERROR_SCHEMA,
    resources=_resources,
    routes=(
        Route("/models/{model_id}", Guard.KEY, model=_MODEL, ops=(
            Op("get", "Model metadata", responses={200: {JSON: codec.ModelMetadataResponse}},
               errors=(400, 401, 403, 404, 500), params=_ID),)),
        Route("/models/{model_id}/ready", Guard.KEY, model=_MODEL, ops=(
            Op("get", "Model readiness (loads it when needed)", responses={200: {JSON: codec.ModelReadyResponse}},
               errors=(400, 401, 403, 404, 500), params=_ID),)),
        Route("/models/{model_id}/infer", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Inference", body=codec.InferBody, responses={200: {JSON: codec.InferResponse}},
               errors=(400, 401, 403, 404, 413, 500), params=_ID),)),
        Route("/health/live", Guard.KEY, ops=(
            Op("get", "Server liveness",
               responses={200: {JSON: {"type": "object", "properties": {"live": {"type": "boolean"}}}}},
               errors=(401, 403)),)),
        Route("/health/ready", Guard.KEY, ops=(
            Op("get", "Server readiness", responses={200: {JSON: _READY}, 503: {JSON: _READY}},
               errors=(401, 403)),)),
    ),
)
