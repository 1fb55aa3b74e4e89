"""Silicon Studio's engine API (seed 001) at /api/engine: models, chat, stop, predict.

Errors have the `/api/` routes' shape, `{"error": "..."}`, with FastAPI's `"detail"` beside it
(http/errors.py).
"""
from __future__ import annotations

import json
from typing import Iterator

import falcon

from modelyard.server.api.generating import run_to_end
from modelyard.server.api.silicon import schema
from modelyard.server.api.silicon.engine import Chat, Engine
from modelyard.server.http.bodies import read_model
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.http.sse import stream_events
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.registry import allowed
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings
from modelyard.server.shared.facts import kv_cache_type_for_bits

# A stream notices a client that went away only when a write fails: while a chat waits for
# a slot, a comment line every few seconds makes that write happen.
PING_SECONDS = 10
SSE_PING = b": ping\n\n"


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


def _optional_body(req, model, settings: Settings):
    """A body the app may leave out (stop, unload): an empty one is the model's defaults."""
    if not req.content_length:
        return model()
    return read_model(req, model, settings.max_body_size)


def _request(body):
    try:
        return body.request()
    except schema.ImageTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    except schema.RequestError as exc:
        raise bad_request(str(exc)) from None


class _Resource:
    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    def body(self, req, model):
        return read_model(req, model, self.settings.max_body_size)


class Models(_Resource):
    def on_get(self, req, resp):
        resp.media = self.engine.models()


class Download(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconDownloadBody)
        download = self.engine.download(body.model_id)
        resp.status = falcon.HTTP_202
        resp.media = {"status": "downloading", "model_id": download.model_id}


class Delete(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconModelRef)
        self.engine.delete(body.model_id)
        resp.media = {"status": "deleted", "model_id": body.model_id}


class Register(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconRegisterBody)
        model = self.engine.register(body.name, body.path, body.url)
        resp.media = {"status": "registered", "model_id": model["id"], "model": model}


class Scan(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconScanBody)
        done, skipped = self.engine.scan(body.path)
        resp.media = {"registered": done, "skipped": skipped}


class Active(_Resource):
    def on_get(self, req, resp):
        model = self.engine.active()
        # {"model": null} without one, as the document says; with one, its fields at the top
        # level too (the document's "returns the currently loaded model with id, name...").
        resp.media = {"model": model, **(model or {})}


class Load(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconLoadBody)
        if self.engine.store.get(body.model_id)["kind"] == "onnx":
            raise bad_request(f"Model '{body.model_id}' is an ONNX model; the engine loads GGUF models")
        loaded = self.engine.load(body.model_id, kv_cache_type_for_bits(body.kv_quantization))
        resp.media = {"status": "loaded", "model_id": loaded.id,
                      "context_window": getattr(loaded.engine, "n_ctx_slot", None)
                      or getattr(loaded.engine, "max_input", 0),
                      "architecture": self.engine.architecture(loaded.id),
                      "kv_cache_type": getattr(loaded.engine, "kv_cache_type", None)}


class Unload(_Resource):
    def on_post(self, req, resp):
        body = _optional_body(req, schema.SiliconUnloadBody, self.settings)
        unloaded = self.engine.unload(body.model_id)
        resp.media = {"status": "unloaded" if unloaded else "not_loaded"}


class Format(_Resource):
    def on_get(self, req, resp, model_id):
        resp.media = self.engine.format(model_id)


class ChatRoute(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconChatBody)
        creq = _request(body)
        job = self.engine.dispatcher.chat(creq)
        chat = self.engine.track(body.model_id, job.group)
        stream_events(resp, self._events(creq, chat))

    def _events(self, creq, chat: Chat) -> Iterator[bytes]:
        group = chat.group
        gen = group.gens[0]
        try:
            for item in group.steps(wait=PING_SECONDS):
                if item is None:
                    yield SSE_PING
                elif item[1] is not None:
                    if item[1].text:
                        yield sse({"text": item[1].text})
                elif gen.error and not chat.stopped:
                    yield sse({"error": gen.error, "done": True})
                    return
            yield sse({"done": True, "stopped": chat.stopped,
                       "finish_reason": "stopped" if chat.stopped else gen.finish_reason,
                       "usage": usage(gen)})
        finally:
            group.close()
            self.engine.untrack(chat)
            self.engine.dispatcher.record(creq.model, gen)


def usage(gen) -> dict:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
            # Prompt tokens whose keys and values were already in the slot's cache (the
            # conversation so far): only the rest was evaluated.
            "cached_tokens": gen.cached_tokens,
            "tokens_per_second": gen.tokens_per_second}


class Stop(_Resource):
    def on_post(self, req, resp):
        body = _optional_body(req, schema.SiliconStopBody, self.settings)
        stopped = self.engine.stop(body.model_id)
        resp.media = {"status": "stopped", "stopped": stopped}


class Predict(_Resource):
    def on_post(self, req, resp):
        body = self.body(req, schema.SiliconPredictBody)
        creq = _request(body)
        _, group, _ = self.engine.dispatcher.completion(creq)
        try:
            run_to_end(req, group)
        finally:
            group.close()
            for gen in group.gens:
                self.engine.dispatcher.record(creq.model, gen)
        resp.media = {"text": group.gens[0].text.text}


def resources(store: Store, dispatcher: Dispatcher, settings: Settings) -> dict:
    """The engine's resources by route below /api/engine (silicon/family.py declares the routes)."""
    engine = Engine(store, dispatcher, allowed.for_settings(settings))
    routes = {
        "/models": Models, "/models/download": Download, "/models/delete": Delete,
        "/models/register": Register, "/models/scan": Scan, "/models/active": Active,
        "/models/load": Load, "/models/unload": Unload,
        "/models/{model_id}/format": Format, "/chat": ChatRoute, "/chat/stop": Stop, "/predict": Predict,
    }
    return {path: resource(engine, settings) for path, resource in routes.items()}
