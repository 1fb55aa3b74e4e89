"""Silicon Studio's engine API (its "Engine / Models API" document) at /api/engine: models, chat, stop, predict.

Errors have the `/api/` routes' shape, `{"error": "..."}`, with FastAPI's `"detail"` beside it
(silicon/family.py).
"""
from __future__ import annotations


import falcon

from modelyard.server.api import responding
from modelyard.server.api.family import SSE
from modelyard.server.api.responding import Running, run_to_end
from modelyard.server.api.silicon import schema
from modelyard.server.api.silicon.engine import Chat, Engine
from modelyard.server.http.bodies import read_model
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.http.sse import PING, frame
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.registry import allowed
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings
from modelyard.server.shared.facts import kv_cache_type_for_bits

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
        resp.media = {"status": "loaded", "model_id": body.model_id,
                      "context_window": loaded.engine.context_size or 0,
                      "architecture": self.engine.architecture(loaded.id),
                      "kv_cache_type": loaded.engine.kv_cache_type}


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
        running = Running(job.group, job.loaded.id, self.engine.dispatcher.record,
                          after=lambda: self.engine.untrack(chat))
        responding.stream(resp, running, _Events(chat), self.settings.keepalive_seconds)


class _Events:
    """Silicon's chat stream: {"text"} events, then one {"done": true, ...} with the usage
    (also when the chat was stopped: a stop is not an error)."""

    content_type = SSE

    def __init__(self, chat: Chat):
        self.chat = chat

    def opening(self, gen):
        return ()

    def step(self, gen, step):
        if step.text:
            yield frame({"text": step.text})

    def closing(self, gen):
        return ()

    def ending(self):
        gen, stopped = self.chat.group.gens[0], self.chat.stopped
        yield frame({"done": True, "stopped": stopped, "finish_reason": "stopped" if stopped else gen.finish_reason,
                   "usage": usage(gen)})

    def error(self, gen, message: str):
        if self.chat.stopped:
            yield from self.ending()
        else:
            yield frame({"error": message, "done": True})

    def ping(self) -> bytes:
        return PING


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
        loaded, group, _ = self.engine.dispatcher.completion(creq)
        run_to_end(req, Running(group, loaded.id, self.engine.dispatcher.record))
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
