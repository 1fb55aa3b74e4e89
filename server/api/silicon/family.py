"""Silicon Studio's engine API, at /api/engine: models, chat, stop, predict, and fine-tuning.

Silicon Studio's engine is a FastAPI app, whose errors are {"detail": "..."}: its routes
answer both keys, so the app's own client and readers of the /api/ routes' {"error": "..."}
each find theirs.
"""
from __future__ import annotations

from modelyard.server.api.family import (JSON, SSE, ClusterModel, Context, Family, ModelIn, Op, Route, Streams,
                                         default_stream_errors)
from modelyard.server.api.silicon import finetune, routes
from modelyard.server.api.silicon import schema as s
from modelyard.server.api.silicon.engine import model_entry
from modelyard.server.finetune.errors import FinetuneError
from modelyard.server.http import sse
from modelyard.server.http.routes import Guard
from modelyard.server.registry.store import public_view

ERROR_SCHEMA = {"type": "object", "required": ["error", "detail"], "properties": {
    "error": {"type": "string"}, "detail": {"type": "string"}}}


def error_body(code: int, message: str, kind: str | None = None) -> dict:
    return {"error": message, "detail": message}


def _resources(ctx: Context) -> dict:
    return {**routes.resources(ctx.store, ctx.dispatcher, ctx.settings),
            **finetune.resources(ctx.store, ctx.settings)}


def _cluster_models(models: list[ClusterModel], query: dict) -> list[dict]:
    """The cluster router's /api/engine/models: the GGUF Models (ONNX is KServe's)."""
    views = [(public_view(m.record(), m.downloaded), m.running) for m in models]
    return [model_entry(view, {}, None, running) for view, running in views if view["kind"] != "onnx"]


_MODEL = ModelIn(body=("model_id",))
_STATUS = {200: {JSON: s.SiliconStatusOut}}
_JOB = ({"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},)
FAMILY = Family(
    name="silicon",
    prefixes=("/api/engine",),
    error_prefixes=("/api/engine",),
    error_body=error_body,
    error_schema=ERROR_SCHEMA,
    resources=_resources,
    error_handlers=((FinetuneError, finetune.finetune_error),),
    keepalives={SSE: sse.PING},
    # Its chat's last event says `done`, so a broken one ends as the engine's own error does.
    stream_errors={**default_stream_errors(), SSE: lambda body, code, message: sse.frame({"error": message, "done": True})},
    routes=(
        Route("/models", Guard.KEY, lists_models=_cluster_models, ops=(
            Op("get", "Every model: status, download progress, path, size",
               responses={200: {JSON: s.SiliconModelListOut}}, errors=(401, 403)),)),
        Route("/models/download", Guard.KEY, ops=(
            Op("post", "Download a Hugging Face repo's GGUF in the background", body=s.SiliconDownloadBody,
               responses={202: {JSON: s.SiliconStatusOut}}, errors=(400, 401, 403, 404, 409, 413)),)),
        Route("/models/delete", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Delete a model (a registered file stays on disk)", body=s.SiliconModelRef,
               responses=_STATUS, errors=(400, 401, 403, 404, 409, 413)),)),
        Route("/models/register", Guard.KEY, ops=(
            Op("post", "Register a GGUF file, or a folder with its projector, where it lies",
               body=s.SiliconRegisterBody, responses=_STATUS, errors=(400, 401, 403, 409, 413)),)),
        Route("/models/scan", Guard.KEY, ops=(
            Op("post", "Register every valid GGUF under a folder; say what was skipped", body=s.SiliconScanBody,
               responses={200: {JSON: s.SiliconScanOut}}, errors=(400, 401, 403, 413)),)),
        Route("/models/active", Guard.KEY, ops=(
            Op("get", "The model this API loaded last, or {\"model\": null}",
               responses={200: {JSON: s.SiliconActiveOut}}, errors=(401, 403)),)),
        Route("/models/load", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Load a model (kv_quantization 4 or 8: a quantized KV cache)", body=s.SiliconLoadBody,
               responses={200: {JSON: s.SiliconLoadOut}}, errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/models/unload", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Unload a model (the active one without a body)", body=s.SiliconUnloadBody,
               responses=_STATUS, errors=(400, 401, 403, 404, 413)),)),
        Route("/models/{model_id}/format", Guard.KEY, model=ModelIn(path="model_id"), ops=(
            Op("get", "The tokenizer's metadata from the GGUF", responses={200: {JSON: s.SiliconFormatOut}},
               errors=(400, 401, 403, 404)),)),
        Route("/chat", Guard.KEY, model=_MODEL, conversation=True, streams=Streams(flag=None), ops=(
            Op("post", "Chat, streamed as SSE {\"text\"} events and a final done event with the usage",
               body=s.SiliconChatBody, responses={200: {SSE: s.SiliconChatEvent}},
               errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/chat/stop", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Stop the chats being streamed (of one model when named)", body=s.SiliconStopBody,
               responses=_STATUS, errors=(400, 401, 403, 413)),)),
        Route("/predict", Guard.KEY, model=_MODEL, ops=(
            Op("post", "A completion for inline suggestions, at the highest priority", body=s.SiliconPredictBody,
               responses={200: {JSON: s.SiliconPredictOut}}, errors=(400, 401, 403, 404, 413, 499, 500, 503)),)),
        # Fine-tuning (silicon/finetune.py).
        Route("/finetune", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Start a LoRA fine-tuning job on a GGUF base", body=finetune.SiliconFinetuneBody,
               responses={202: {JSON: {"type": "object"}}}, errors=(400, 401, 403, 404, 409, 413, 501)),)),
        Route("/jobs", Guard.KEY, ops=(
            Op("get", "Every fine-tuning job", responses={200: {JSON: {"type": "array"}}}, errors=(401, 403)),)),
        Route("/jobs/{job_id}", Guard.KEY, ops=(
            Op("get", "A fine-tuning job: status, step, loss, time left", responses={200: {JSON: {"type": "object"}}},
               errors=(401, 403, 404), params=_JOB),)),
        Route("/jobs/{job_id}/cancel", Guard.KEY, ops=(
            Op("post", "Cancel a queued or running fine-tuning job", responses={200: {JSON: {"type": "object"}}},
               errors=(401, 403, 404, 409), params=_JOB),)),
        Route("/models/adapters", Guard.KEY, ops=(
            Op("get", "The fine-tuned adapters", responses={200: {JSON: s.SiliconAdapterList}}, errors=(401, 403)),)),
        Route("/models/export", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Merge an adapter into its base and quantize it, as a job: answered when it ends, "
               "or at once (202, the job) with Prefer: respond-async", body=finetune.SiliconExportBody,
               responses={200: {JSON: {"type": "object"}}, 202: {JSON: {"type": "object"}}},
               errors=(400, 401, 403, 404, 409, 413, 422, 501)),)),
    ),
)
