"""Ollama's API: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/tags, /api/show,
/api/ps, /api/version, and GET/HEAD / ("Ollama is running"), which clients probe.

Streams are NDJSON (Ollama's default is to stream); the last object carries `done_reason`
and the timings in nanoseconds. Errors are `{"error": "..."}`, or a last `{"error": ...}`
line once a stream has begun.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Iterator

import falcon
import gguf

from modelyard.server.shared import names
from modelyard.server.api.ollama import templates
from modelyard.server.api.ollama.schema import (ChatBody, CopyBody, DeleteBody, EmbedBody, EmbeddingsBody, GenerateBody,
                                                RequestError, ShowBody, chat_messages, decode_images,
                                                keep_alive_seconds, validate, with_defaults)
from modelyard.server.http.bodies import read_json_object
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.http.jsonio import dumps
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.requests import IMAGE_MARKER, ChatRequest, CompletionRequest, EmbeddingRequest
from modelyard.server.registry import formats
from modelyard.server.shared.facts import GENERATIVE_KINDS

NDJSON = "application/x-ndjson"
GGUF_KINDS = ("llm", "vlm", "embed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def _resolve(dispatcher: Dispatcher, name: str | None) -> str:
    """The model a request names, or the daemon default where it names none (Mullama's
    requests may omit `model`): the one set with set_default, else the first loaded."""
    if name:
        return name
    default = dispatcher.manager.default_model()
    if default is None:
        raise bad_request("'model' is required: no model is loaded to be the default "
                          "(name one, or load one with POST /api/models/load)")
    return names.short_name(default)


def _parse(model, body):
    try:
        return validate(model, body)
    except RequestError as exc:
        raise bad_request(str(exc)) from None


class _Models:
    """What the model routes read of the registry and of a model's GGUF header."""

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.store = dispatcher.manager.store
        self._meta = formats.MetadataCache()

    def gguf_meta(self, model_id: str) -> dict:
        return self._meta.get(model_id, self.store.file_path(model_id))

    def details(self, model_id: str) -> dict:
        meta = self.gguf_meta(model_id)
        family = meta.get("general.architecture", "")
        file_type = meta.get("general.file_type")
        try:
            quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else ""
        except ValueError:
            quant = str(file_type)
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
                "parameter_size": meta.get("general.size_label", ""), "quantization_level": quant}

    def entry(self, view: dict) -> dict:
        return {"name": names.to_name(view["id"]), "model": names.to_name(view["id"]),
                "modified_at": _iso(view.get("createdAt")), "size": view.get("totalSize") or 0,
                "digest": view.get("sha256", ""), "details": self.details(view["id"])}


class Root:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Ollama is running"

    def on_head(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT


class Version:
    def on_get(self, req, resp):
        resp.media = {"version": version("modelyard")}


class Tags(_Models):
    def on_get(self, req, resp):
        models = [self.entry(v) for v in self.store.list(ready=True) if v["kind"] in GGUF_KINDS]
        resp.media = {"models": models}


class Show(_Models):
    """POST /api/show (Ollama) and GET /api/show?name= (the Ollama Toolkit's form)."""

    def on_get(self, req, resp):
        name = req.get_param("name") or req.get_param("model")
        if not name:
            raise bad_request("Query parameter 'name' is required")
        resp.media = self.show(name)

    def on_post(self, req, resp):
        body = _parse(ShowBody, read_json_object(req, self.dispatcher.settings.max_body_size))
        resp.media = self.show(body.target)

    def show(self, name: str) -> dict:
        model_id = names.to_id(name)
        view = self.store.get(model_id)
        if view["kind"] not in GGUF_KINDS or not view["readyToUse"]:
            raise ApiError(404, f"model '{name}' not found")
        meta = self.gguf_meta(model_id)
        template = meta.get("tokenizer.chat_template", "")
        capabilities = ["embedding"] if view["kind"] == "embed" else ["completion"]
        if view["kind"] == "vlm":
            capabilities.append("vision")
        if "tools" in template:
            capabilities.append("tools")
        if "<think>" in template:
            capabilities.append("thinking")
        details = self.details(model_id)
        record = self.store.meta(model_id).get("ollama") or {}
        params = dict(record.get("parameters") or {})
        ctx = (view.get("gguf") or {}).get("initContextSize")
        if ctx and "num_ctx" not in params:
            params["num_ctx"] = ctx
        lines = [f"{k} {json.dumps(v)}" if isinstance(v, str) else f"{k} {v}"
                 for k, values in params.items() for v in (values if isinstance(values, list) else [values])]
        parameters = "\n".join(lines)
        template = record.get("template") or template
        modelfile = f"# Modelfile generated by Modelyard\nFROM {names.to_name(model_id)}\n"
        if record.get("template"):
            modelfile += f'TEMPLATE """{record["template"]}"""\n'
        if record.get("system"):
            modelfile += f'SYSTEM """{record["system"]}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in lines)
        return {
            "modelfile": modelfile, "parameters": parameters, "template": template,
            "system": record.get("system", ""), "license": record.get("license", ""), "details": details,
            "model_info": {k: v for k, v in meta.items() if not k.startswith("tokenizer.ggml.")},
            "capabilities": capabilities, "modified_at": _iso(view.get("createdAt")),
            # the Ollama Toolkit's flat fields
            "name": names.to_name(model_id), "size": view.get("totalSize") or 0,
            "digest": view.get("sha256", ""), "format": "gguf", "family": details["family"],
            "parameter_size": details["parameter_size"], "quantization_level": details["quantization_level"],
        }


class Copy(_Models):
    def on_post(self, req, resp):
        body = _parse(CopyBody, read_json_object(req, self.dispatcher.settings.max_body_size))
        self.store.copy(names.to_id(body.source), names.to_id(body.destination))
        resp.media = {"status": "success"}


class Delete(_Models):
    def on_delete(self, req, resp):
        body = _parse(DeleteBody, read_json_object(req, self.dispatcher.settings.max_body_size))
        model_id = names.to_id(body.target)
        self.dispatcher.manager.unload(model_id)
        self.store.delete(model_id)
        resp.media = {"status": "success"}


class Ps(_Models):
    def on_get(self, req, resp):
        models, running = [], []
        for m in self.dispatcher.manager.loaded():
            if m.kind not in GGUF_KINDS:
                continue
            view = self.store.get(m.id)
            engine = m.engine
            entry = self.entry(view)
            entry.update({"expires_at": "2318-01-01T00:00:00Z", "size_vram": 0,
                          "context_length": getattr(engine, "n_ctx_slot", None) or getattr(engine, "max_input", 0)})
            models.append(entry)
            running.append({"name": entry["name"], "status": "running", "pid": getattr(engine, "pid", None)})
        resp.media = {"models": models, "running": running}


# ---- generation -----------------------------------------------------------------------

class _Generate:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.settings = dispatcher.settings

    def _begin(self, req, model):
        """(start time, body, model id, loaded model, load time in ns, the model's Ollama
        record) of a generation. The record is what `create` or a pull gave the model: a
        system prompt and default options."""
        started = time.monotonic_ns()
        body = _parse(model, read_json_object(req, self.settings.max_body_size))
        body.model = _resolve(self.dispatcher, body.model)
        model_id = names.to_id(body.model)
        loaded = self.dispatcher.model(model_id, GENERATIVE_KINDS)
        record = self.dispatcher.manager.store.meta(model_id).get("ollama") or {}
        return started, body, model_id, loaded, time.monotonic_ns() - started, record

    def _only_load(self, resp, body, model_id: str, empty: dict) -> None:
        """A request with nothing to generate loads the model (or unloads it, keep_alive 0)."""
        self._keep_alive(body, model_id)
        resp.media = {"model": body.model, "created_at": _now(), **empty, "done": True,
                      "done_reason": "unload" if keep_alive_seconds(body.keep_alive) == 0 else "load"}

    def _keep_alive(self, body, model_id: str) -> None:
        seconds = keep_alive_seconds(body.keep_alive)
        if seconds is not None and seconds == 0:
            self.dispatcher.manager.unload(model_id)

    @staticmethod
    def _stats(gen, started: int, load_ns: int) -> dict:
        t_submit = int(gen.t_submit * 1e9)
        t_first = int((gen.t_first or gen.t_end or time.monotonic()) * 1e9)
        t_end = int((gen.t_end or time.monotonic()) * 1e9)
        total = time.monotonic_ns() - started
        return {"total_duration": total, "load_duration": load_ns,
                "prompt_eval_count": gen.prompt_tokens, "prompt_eval_duration": max(t_first - t_submit, 0),
                "eval_count": gen.completion_tokens, "eval_duration": max(t_end - t_first, 0),
                # Mullama's names for the same facts
                "total_duration_ms": total // 1_000_000, "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "tokens_per_second": round(gen.tokens_per_second or 0.0, 2)}

    def _respond(self, resp, body, model_name: str, group, make_chunk, finish, on_close) -> None:
        """Run a generation to its end, or stream it as NDJSON."""
        if not body.stream:
            try:
                for _ in group.steps():
                    pass
            finally:
                on_close()
            gen = group.gens[0]
            if gen.error:
                raise ApiError(503, gen.error)
            resp.media = finish(gen)
            return
        resp.content_type = NDJSON
        resp.stream = self._lines(group, make_chunk, finish, on_close)

    @staticmethod
    def _lines(group, make_chunk, finish, on_close) -> Iterator[bytes]:
        try:
            for gen, step in group.steps():
                if step is not None:
                    chunk = make_chunk(step)
                    if chunk is not None:
                        yield dumps(chunk) + b"\n"
                else:
                    if gen.error:
                        yield dumps({"error": gen.error}) + b"\n"
                        return
                    yield dumps(finish(gen, streamed=True)) + b"\n"
        finally:
            on_close()


def _done_reason(gen) -> str:
    return "length" if gen.finish_reason == "length" else "stop"


def _split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a reasoning model's text: what is inside <think>...</think>."""
    start = text.find("<think>")
    if start < 0:
        return "", text
    end = text.find("</think>", start)
    if end < 0:
        return text[start + 7:].strip(), text[:start]
    return text[start + 7:end].strip(), (text[:start] + text[end + 8:]).lstrip()


class Generate(_Generate):
    def on_post(self, req, resp):
        started, body, model_id, loaded, load_ns, record = self._begin(req, GenerateBody)
        if not body.prompt and not body.images:
            self._only_load(resp, body, model_id, {"response": ""})
            return
        opts = with_defaults(body.all_options(), record.get("parameters"))
        system = body.system if body.system is not None else record.get("system")
        common = dict(model=model_id, sampling=opts.sampling(), max_tokens=opts.max_tokens(), stop=opts.stops(),
                      stream=body.stream, include_usage=False, logprobs=None)
        try:
            images = decode_images(body.images, "body")
        except RequestError as exc:
            raise bad_request(str(exc)) from None
        # A prompt laid out here (fill-in-the-middle, raw, a continued context, an Ollama
        # template) goes to the engine as tokens; otherwise the model's chat template serves.
        tokens = None
        if body.suffix:
            tokens = loaded.model.infill_prompt(body.prompt or "", body.suffix)
            if tokens is None:
                raise bad_request(f"{body.model} does not support insert (its vocabulary has no "
                                  "fill-in-the-middle tokens)")
        elif body.raw or body.context:
            tokens = list(body.context or []) + loaded.model.tokenize(body.prompt or "",
                                                                     add_special=not body.context)
        elif not images and (templated := self._templated(body, record, system)) is not None:
            tokens = loaded.model.tokenize(templated, add_special=True)
        if tokens is not None:
            _, group, _ = self.dispatcher.completion(CompletionRequest(**common, prompts=[tokens]))
            job = None
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": (body.prompt or "") + IMAGE_MARKER * len(images)}]
            creq = ChatRequest(**common, messages=messages, images=images,
                               tool_choice="none", response_format=body.response_format())
            job = self.dispatcher.chat(creq)
            group = job.group
        gen = group.gens[0]
        produced: list[int] = []

        def chunk(step):
            if step.token is not None:
                produced.append(step.token)
            if not step.text:
                return None
            return {"model": body.model, "created_at": _now(), "response": step.text, "done": False}

        def finish(g, streamed=False):
            text = "" if streamed else g.text.text
            out = {"model": body.model, "created_at": _now(), "response": text, "done": True,
                   "done_reason": _done_reason(g), "context": list(g.req.prompt) + produced,
                   **self._stats(g, started, load_ns)}
            if body.think and not streamed:
                out["thinking"], out["response"] = _split_thinking(text)
            return out

        def close():
            group.close()
            self.dispatcher.record(model_id, gen)
            self._keep_alive(body, model_id)

        if not body.stream:
            # the answer's tokens, for `context`
            def collect():
                for g, step in group.steps():
                    if step is not None and step.token is not None:
                        produced.append(step.token)
            try:
                collect()
            finally:
                close()
            if gen.error:
                raise ApiError(503, gen.error)
            resp.media = finish(gen)
            return
        self._respond(resp, body, body.model, group, chunk, finish, close)


    @staticmethod
    def _templated(body, record: dict, system: str | None) -> str | None:
        """The prompt rendered by the request's `template`, or by the model's own Ollama
        template (from a create or a pull) when it is one this renderer runs; None: the
        model's GGUF chat template serves, as for /v1."""
        template = body.template or record.get("template")
        if not template:
            return None
        try:
            return templates.render(template, {"System": system or "", "Prompt": body.prompt or ""})
        except templates.TemplateError as exc:
            if body.template:
                raise bad_request(f"'template': {exc}") from None
            return None


class Chat(_Generate):
    def on_post(self, req, resp):
        started, body, model_id, _, load_ns, record = self._begin(req, ChatBody)
        if not body.messages:
            self._only_load(resp, body, model_id, {"message": {"role": "assistant", "content": ""}})
            return
        try:
            messages, images = chat_messages(body)
        except RequestError as exc:
            raise bad_request(str(exc)) from None
        opts = with_defaults(body.all_options(), record.get("parameters"))
        system = body.system if body.system is not None else record.get("system")
        if system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        tools = [t if "type" in t else {"type": "function", "function": t} for t in body.tools or []] or None
        creq = ChatRequest(model=model_id, sampling=opts.sampling(), max_tokens=opts.max_tokens(),
                           stop=opts.stops(), stream=body.stream, include_usage=False, logprobs=None,
                           messages=messages, images=images, tools=tools,
                           tool_choice="auto" if tools else "none", response_format=body.response_format())
        try:
            job = self.dispatcher.chat(creq)
        except RequestError as exc:
            raise bad_request(str(exc)) from None
        gen = job.group.gens[0]
        # With tools, the answer may be a call: it is held back and sent whole at the end.
        hold = job.parse_tools

        def message(text: str) -> dict:
            msg: dict = {"role": "assistant", "content": text}
            if body.think:
                msg["thinking"], msg["content"] = _split_thinking(text)
            if hold:
                content, calls = self.dispatcher.tool_parse(job, text)
                if calls:
                    msg["content"] = content or ""
                    msg["tool_calls"] = [{"function": {"name": c["function"]["name"],
                                                       "arguments": _arguments(c["function"]["arguments"])}}
                                         for c in calls]
            return msg

        def chunk(step):
            if not step.text:
                return None
            return {"model": body.model, "created_at": _now(),
                    "message": {"role": "assistant", "content": step.text}, "done": False}

        def finish(g, streamed=False):
            held = g.text.text if (not streamed or hold) else ""
            return {"model": body.model, "created_at": _now(), "message": message(held),
                    "done": True, "done_reason": _done_reason(g), **self._stats(g, started, load_ns)}

        def close():
            job.group.close()
            self.dispatcher.record(model_id, gen)
            self._keep_alive(body, model_id)

        if hold and body.stream:
            # nothing is sent until the end: the final object carries the whole message
            resp.content_type = NDJSON
            resp.stream = self._lines(job.group, lambda step: None, finish, close)
            return
        self._respond(resp, body, body.model, job.group, chunk, finish, close)


def _arguments(raw) -> dict:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Embed:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def on_post(self, req, resp):
        started = time.monotonic_ns()
        body = _parse(EmbedBody, read_json_object(req, self.dispatcher.settings.max_body_size))
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs or any(not x for x in inputs):
            raise bad_request("'input' must be a non-empty string or list of non-empty strings")
        model_id = names.to_id(body.model)
        t0 = time.monotonic_ns()
        self.dispatcher.model(model_id, ("embed",))
        load_ns = time.monotonic_ns() - t0
        if body.truncate:
            inputs = self._truncate(model_id, inputs)
        vectors, n_tokens = self.dispatcher.embed(EmbeddingRequest(model_id, inputs, dimensions=body.dimensions))
        resp.media = {"model": body.model, "embeddings": vectors, "total_duration": time.monotonic_ns() - started,
                      "load_duration": load_ns, "prompt_eval_count": n_tokens}

    def _truncate(self, model_id: str, inputs: list[str]) -> list:
        engine = self.dispatcher.manager.get(model_id).engine
        out = []
        for x in inputs:
            tokens = engine.tokenize(x)
            out.append(tokens[:engine.max_input] if len(tokens) > engine.max_input else x)
        return out


class Embeddings:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def on_post(self, req, resp):
        """Ollama's `prompt` gets `embedding`; Mullama's `input` gets `embeddings`, `dimensions`
        and `total_tokens` as well (both shapes are in every answer)."""
        body = _parse(EmbeddingsBody, read_json_object(req, self.dispatcher.settings.max_body_size))
        model = _resolve(self.dispatcher, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input if body.input is not None \
            else [body.prompt]
        if any(not t for t in texts):
            if body.input is not None:
                raise bad_request("'input' must be a non-empty string or list of non-empty strings")
            resp.media = {"embedding": []}  # Ollama answers an empty prompt so
            return
        vectors, n_tokens = self.dispatcher.embed(EmbeddingRequest(names.to_id(model), texts))
        resp.media = {"embedding": vectors[0], "model": model, "embeddings": vectors,
                      "dimensions": len(vectors[0]), "total_tokens": n_tokens}


def add_routes(app: falcon.App, dispatcher: Dispatcher) -> None:
    app.add_route("/", Root())
    app.add_route("/api/version", Version())
    app.add_route("/api/tags", Tags(dispatcher))
    app.add_route("/api/show", Show(dispatcher))
    app.add_route("/api/ps", Ps(dispatcher))
    app.add_route("/api/copy", Copy(dispatcher))
    app.add_route("/api/delete", Delete(dispatcher))
    app.add_route("/api/generate", Generate(dispatcher))
    app.add_route("/api/chat", Chat(dispatcher))
    app.add_route("/api/embed", Embed(dispatcher))
    app.add_route("/api/embeddings", Embeddings(dispatcher))
