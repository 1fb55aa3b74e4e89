"""Ollama's API: which route each handler serves (models.py: the model routes,
generation.py: /api/generate and /api/chat, embeddings.py, transfers.py: pull, push, create,
blobs). Its errors are `{"error": "..."}`. Mullama's daemon answers the same routes
(api/mullama).
"""
from __future__ import annotations

from datetime import datetime, timezone

from modelyard.server.api.family import (GGUF_KINDS, JSON, MESSAGE_ERROR_SCHEMA, NDJSON, OCTETS, ClusterModel, Context,
                                         Family, ModelIn, Op, Route, Streams, message_error_body)
from modelyard.server.api.ollama import schema as s
from modelyard.server.api.ollama.embeddings import Embed, Embeddings
from modelyard.server.api.ollama.generation import Chat, Generate
from modelyard.server.api.ollama.models import Copy, Delete, Ps, Root, Show, Tags, Version
from modelyard.server.api.ollama.transfers import Blob, Blobs, Create, Pull, Push
from modelyard.server.http.routes import Guard
from modelyard.server.shared import names

def _resources(ctx: Context) -> dict:
    d, store, settings = ctx.dispatcher, ctx.store, ctx.settings
    blobs = Blobs(store.root)
    return {
        "/": Root(), "/api/version": Version(), "/api/tags": Tags(d), "/api/show": Show(d), "/api/ps": Ps(d),
        "/api/copy": Copy(d), "/api/delete": Delete(d), "/api/generate": Generate(d), "/api/chat": Chat(d),
        "/api/embed": Embed(d), "/api/embeddings": Embeddings(d),
        "/api/pull": Pull(store, settings), "/api/push": Push(store, settings),
        "/api/create": Create(store, blobs, settings), "/api/blobs/{digest}": Blob(blobs, store, settings),
    }


_ANY = {"type": "object"}
_MODELS = {JSON: {"type": "object", "required": ["models"], "properties": {"models": {"type": "array"}}}}
_STREAMED = {200: {JSON: _ANY, NDJSON: {"type": "string"}}}
# Ollama's bodies name the model `model`; older clients send `name`.
_MODEL = ModelIn(body=("model", "name"))
_DIGEST = ({"name": "digest", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "sha256:<64 hex digits>"},)


def _cluster_entry(m: ClusterModel) -> dict:
    """A Model in the cluster router's lists; `details` carry only what the Model says (the
    GGUF header is the pods' to read)."""
    name = names.to_name(m.name)
    modified = datetime.fromtimestamp((m.created_ms or 0) / 1000, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": name, "model": name, "modified_at": modified, "size": m.total_size or 0, "digest": m.sha256,
            "details": {"parent_model": "", "format": "gguf", "family": "", "families": None,
                        "parameter_size": "", "quantization_level": ""}}


def _cluster_tags(models: list[ClusterModel], query: dict) -> dict:
    return {"models": [_cluster_entry(m) for m in models if m.downloaded and m.kind in GGUF_KINDS]}


def _cluster_ps(models: list[ClusterModel], query: dict) -> dict:
    running, procs = [], []
    for m in models:
        if not m.running or m.kind not in GGUF_KINDS:
            continue
        entry = _cluster_entry(m)
        entry.update({"expires_at": "2318-01-01T00:00:00Z", "size_vram": 0,
                      "context_length": (m.gguf or {}).get("initContextSize") or 0})
        running.append(entry)
        procs.append({"name": entry["name"], "status": "running", "pid": None})
    return {"models": running, "running": procs}


# Ollama's streams are NDJSON, on unless the body says `"stream": false`.
_NDJSON_STREAM = Streams(NDJSON, default=True)
FAMILY = Family(
    name="ollama",
    prefixes=("",),
    error_prefixes=("/api",),
    error_body=message_error_body,
    error_schema=MESSAGE_ERROR_SCHEMA,
    resources=_resources,
    routes=(
        Route("/", Guard.OPEN, ops=(
            Op("get", "Ollama is running (clients probe it)", responses={200: {"text/plain": {"type": "string"}}},
               errors=()),
            Op("head", "Ollama is running", responses={200: {}}, errors=()))),
        Route("/api/version", Guard.KEY, ops=(
            Op("get", "The server's version", responses={200: {JSON: {
                "type": "object", "required": ["version"], "properties": {"version": {"type": "string"}}}}},
               errors=(401, 403)),)),
        Route("/api/tags", Guard.KEY, lists_models=_cluster_tags, ops=(
            Op("get", "The models", responses={200: _MODELS}, errors=(401, 403)),)),
        Route("/api/show", Guard.KEY, model=ModelIn(body=("model", "name"), query="name"), ops=(
            Op("get", "A model's details (the Ollama Toolkit's form)", responses={200: {JSON: _ANY}},
               params=({"name": "name", "in": "query", "schema": {"type": "string"}},),
               errors=(400, 401, 403, 404)),
            Op("post", "A model's details, template, parameters and GGUF metadata", body=s.ShowBody,
               responses={200: {JSON: _ANY}}, errors=(400, 401, 403, 404, 413)))),
        Route("/api/ps", Guard.KEY, lists_models=_cluster_ps, ops=(
            Op("get", "The loaded models", responses={200: _MODELS}, errors=(401, 403)),)),
        Route("/api/copy", Guard.KEY, model=ModelIn(body=("source",)), ops=(
            Op("post", "A second name for a model's file (no bytes copied)", body=s.CopyBody,
               responses={200: {JSON: _ANY}}, errors=(400, 401, 403, 404, 409, 413)),)),
        Route("/api/delete", Guard.KEY, model=_MODEL, ops=(
            Op("delete", "Delete a model (other names of its file keep it)", body=s.DeleteBody,
               responses={200: {JSON: _ANY}}, errors=(400, 401, 403, 404, 409, 413)),)),
        Route("/api/generate", Guard.KEY, model=_MODEL, conversation=True, streams=_NDJSON_STREAM, ops=(
            Op("post", "Generate (NDJSON stream by default)", body=s.GenerateBody, responses=_STREAMED,
               errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/api/chat", Guard.KEY, model=_MODEL, conversation=True, streams=_NDJSON_STREAM, ops=(
            Op("post", "Chat (NDJSON stream by default)", body=s.ChatBody, responses=_STREAMED,
               errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/api/embed", Guard.KEY, model=_MODEL, ops=(
            Op("post", "Embeddings", body=s.EmbedBody,
               responses={200: {JSON: {"type": "object", "required": ["embeddings"]}}},
               errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/api/embeddings", Guard.KEY, model=_MODEL, ops=(
            Op("post", "One embedding (the older form)", body=s.EmbeddingsBody,
               responses={200: {JSON: {"type": "object", "required": ["embedding"]}}},
               errors=(400, 401, 403, 404, 413, 500, 503)),)),
        Route("/api/pull", Guard.KEY, model=_MODEL, streams=_NDJSON_STREAM, ops=(
            Op("post", "Pull a model from Hugging Face (hf.co/org/repo:quant) or an OCI registry "
               "(host/namespace/model:tag), with NDJSON progress", body=s.PullBody, responses=_STREAMED,
               errors=(400, 401, 403, 404, 409, 413, 502)),)),
        Route("/api/push", Guard.KEY, model=_MODEL, streams=_NDJSON_STREAM, ops=(
            Op("post", "Push a model to the OCI registry its name names, with NDJSON progress", body=s.PullBody,
               responses=_STREAMED, errors=(400, 401, 403, 404, 409, 413, 502)),)),
        Route("/api/create", Guard.KEY, model=_MODEL, streams=_NDJSON_STREAM, ops=(
            Op("post", "Create a model from a model or from blobs (system, template, parameters, quantize)",
               body=s.CreateBody, responses=_STREAMED, errors=(400, 401, 403, 404, 409, 413)),)),
        Route("/api/blobs/{digest}", Guard.KEY, ops=(
            Op("head", "Whether a blob is here (200) or not (404)", responses={200: {}, 404: {}},
               errors=(400, 401, 403), params=_DIGEST),
            Op("post", "Upload a blob; its sha256 must equal the digest", body_type=OCTETS, responses={201: {}},
               errors=(400, 401, 403, 409, 413), params=_DIGEST))),
    ),
)
