"""The model registry (mimOE's mModelStore API) at /store/v1, and at /mimik-ai/store/v1 for
clients written for mimOE. Reads are open; changes need the key, and a wrong key is a 403
as the registry's document says."""
from __future__ import annotations

from modelyard.server.api.family import JSON, OCTETS, SSE, ClusterModel, Context, Family, ModelIn, Op, Route
from modelyard.server.api.store import schema as s
from modelyard.server.api.store.download import Download
from modelyard.server.api.store.models import BadModelPath, Model, Models, Upload, schema_error
from modelyard.server.http.routes import Guard
from modelyard.server.registry.store import public_view


def _resources(ctx: Context) -> dict:
    return {"/models": Models(ctx.store, ctx.settings), "/models/{model_id}": Model(ctx.store),
            "/models/{model_id}/upload": Upload(ctx.store, ctx.settings),
            "/models/{model_id}/download": Download(ctx.store, ctx.settings)}


def _cluster_models(models: list[ClusterModel], query: dict) -> dict:
    """The cluster router's /store/v1/models, with the registry's kind and ready filters."""
    kind, ready = query.get("kind"), query.get("ready")
    ready_wanted = None if ready is None else ready.lower() in ("1", "true", "yes")
    views = [public_view(m.record(), m.downloaded) for m in models]
    return {"data": [v for v in views if (kind is None or v["kind"] == kind)
                     and (ready_wanted is None or v["readyToUse"] == ready_wanted)]}


_BY_ID = ModelIn(path="model_id")
_ALT = ({"name": "alt", "in": "query", "schema": {"type": "string", "enum": ["media"]}},)
_FILE = {"type": "string", "format": "binary"}
PREFIXES = ("/store/v1", "/mimik-ai/store/v1")
FAMILY = Family(
    name="registry",
    prefixes=PREFIXES,
    error_prefixes=PREFIXES,
    bad_key_status=403,
    resources=_resources,
    error_handlers=((s.SchemaError, schema_error),),
    # An id with '/' in it (as a traversal has) matches no route: a 400 that says why.
    sinks=tuple((f"{prefix}/models/", BadModelPath) for prefix in PREFIXES),
    routes=(
        Route("/models", Guard.WRITES, model=ModelIn(body=("id",)), lists_models=_cluster_models, ops=(
            Op("get", "List models", responses={200: {JSON: s.ModelList}}, errors=(400,), params=(
                {"name": "kind", "in": "query", "schema": {"type": "string", "enum": list(s.LISTED_KINDS)}},
                {"name": "ready", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}})),
            Op("post", "Create a model (200 when it exists: updated)", body=s.CreateModel,
               responses={200: {JSON: s.ModelView}, 201: {JSON: s.ModelView}}, errors=(400, 401, 403, 409, 413)),
            Op("put", "Update a model's metadata", body=s.UpdateModel, responses={200: {JSON: s.ModelView}},
               errors=(400, 401, 403, 404, 409, 413)))),
        Route("/models/{model_id}", Guard.WRITES, model=_BY_ID, ops=(
            Op("get", "A model, or its file with ?alt=media (Range works)",
               responses={200: {JSON: s.ModelView, OCTETS: _FILE}, 206: {OCTETS: _FILE}},
               params=_ALT, errors=(400, 404, 416)),
            Op("head", "A model's headers, or its file's with ?alt=media", responses={200: {}, 206: {}},
               params=_ALT, errors=(400, 404, 416)),
            Op("delete", "Delete a model and its files", responses={204: {}}, errors=(400, 401, 403, 404, 409)))),
        Route("/models/{model_id}/upload", Guard.WRITES, model=_BY_ID, ops=(
            Op("post", "Upload the model's file (multipart)", body=s.UploadForm, body_type="multipart/form-data",
               responses={200: {JSON: s.ModelView}}, errors=(400, 401, 403, 404, 409, 413, 415)),)),
        Route("/models/{model_id}/download", Guard.WRITES, model=_BY_ID, ops=(
            Op("post", "Download the model's file from a URL or Hugging Face, with progress as Server-Sent Events",
               body=s.DownloadModel, responses={200: {SSE: s.DownloadProgress}},
               errors=(400, 401, 403, 404, 409, 413)),)),
    ),
)
