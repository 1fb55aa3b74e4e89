"""Ollama's /api/generate and /api/chat.

Streams are NDJSON (Ollama's default is to stream); the last object carries `done_reason`
and the timings in nanoseconds. Errors are `{"error": "..."}`, or a last `{"error": ...}`
line once a stream has begun.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from modelyard.server.shared import names
from modelyard.server.api import responding
from modelyard.server.api.family import NDJSON
from modelyard.server.api.ollama import bodies, templates
from modelyard.server.api.responding import Running, run_to_end
from modelyard.server.api.ollama.schema import (ChatBody, GenerateBody, RequestError, chat_messages, decode_images,
                                                keep_alive_seconds, with_defaults)
from modelyard.server.http.errors import bad_request
from modelyard.server.http import jsonio
from modelyard.server.inference.answers import AnswerCutter
from modelyard.server.inference.dispatch import Dispatcher, check_prompt_length
from modelyard.server.inference.requests import IMAGE_MARKER, ChatRequest, CompletionRequest
from modelyard.server.shared.facts import GENERATIVE_KINDS



def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _Generate:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.settings = dispatcher.settings

    def _begin(self, req, model):
        """(start time, body, model id, loaded model, load time in ns, the model's Ollama
        record) of a generation. The record is what `create` or a pull gave the model: a
        system prompt and default options."""
        started = time.monotonic_ns()
        body = bodies.read(req, model, self.settings.max_body_size)
        body.model = bodies.resolve(self.dispatcher, body.model)
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

    def _running(self, group, model_id: str, body) -> Running:
        return Running(group, model_id, self.dispatcher.record, after=lambda: self._keep_alive(body, model_id))

    def _respond(self, req, resp, body, running: Running, make_chunk, finish, keep_alive: dict,
                 on_step=None) -> None:
        """Run a generation to its end (the client watched), or stream it as NDJSON."""
        if body.stream:
            responding.stream(resp, running, _Lines(make_chunk, finish, keep_alive, on_step),
                              self.settings.keepalive_seconds)
            return
        run_to_end(req, running, on_step)
        resp.media = finish(running.group.gens[0])


class _Lines:
    """Ollama's NDJSON stream: a line per piece of text, then the final object with
    `done_reason` and the timings; an `{"error": ...}` line when it fails. Its keep-alive
    is a chunk with no text (NDJSON has no comment line, and Ollama's clients parse every
    line as a chunk)."""

    content_type = NDJSON

    def __init__(self, make_chunk, finish, keep_alive: dict, on_step=None):
        self.make_chunk, self.finish, self.keep_alive, self.on_step = make_chunk, finish, keep_alive, on_step

    def opening(self, gen):
        return ()

    def step(self, gen, step):
        if self.on_step is not None:
            self.on_step(gen, step)
        chunk = self.make_chunk(step)
        if chunk is not None:
            yield jsonio.line(chunk)

    def closing(self, gen):
        yield jsonio.line(self.finish(gen, streamed=True))

    def ending(self):
        return ()

    def error(self, gen, message: str):
        yield jsonio.line({"error": message})

    def ping(self) -> bytes:
        return jsonio.line({**self.keep_alive, "created_at": _now(), "done": False})


def _done_reason(gen) -> str:
    return "length" if gen.finish_reason == "length" else "stop"


def _cut(cutter: AnswerCutter, step) -> tuple[str, str] | None:
    """(thinking, text) of one step's piece that is sure to be sent now; None: nothing yet."""
    segments = cutter.feed(step.text) if step.text else []
    if not segments:
        return None
    return _joined(segments)


def _joined(segments) -> tuple[str, str]:
    return ("".join(t for kind, t in segments if kind == "thinking"),
            "".join(t for kind, t in segments if kind == "text"))


def _the_rest(cutter: AnswerCutter, gen, streamed: bool) -> tuple[str, str, str]:
    """(thinking, text, held text that may be calls) that the final object carries: what the
    stream has not sent yet, or the whole answer."""
    if not streamed:
        return cutter.whole(gen.text.text)
    segments, held = cutter.finish()
    return (*_joined(segments), held)


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
            check_prompt_length(len(body.prompt or "") + len(body.suffix), loaded.engine.n_ctx_slot,
                                loaded.model.max_piece_bytes, why=self.dispatcher.why_settings(loaded))
            tokens = loaded.model.infill_prompt(body.prompt or "", body.suffix)
            if tokens is None:
                raise bad_request(f"{body.model} does not support insert (its vocabulary has no "
                                  "fill-in-the-middle tokens)")
        elif body.raw or body.context:
            tokens = list(body.context or []) + self.dispatcher.tokenize(
                loaded, body.prompt or "", add_special=not body.context)
        elif not images and (templated := self._templated(body, record, system, loaded)) is not None:
            tokens = self.dispatcher.tokenize(loaded, templated, add_special=True)
        if tokens is not None:
            _, group, _ = self.dispatcher.completion(CompletionRequest(**common, prompts=[tokens]))
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": (body.prompt or "") + IMAGE_MARKER * len(images)}]
            creq = ChatRequest(**common, messages=messages, images=images,
                               tool_choice="none", response_format=body.response_format())
            job = self.dispatcher.chat(creq)
            group = job.group
        produced: list[int] = []

        def collect(g, step):
            if step.token is not None:
                produced.append(step.token)

        # With `think`, the <think>...</think> part goes in `thinking`, streamed or not.
        cutter = AnswerCutter(thinking=bool(body.think))

        def chunk(step):
            if (cut := _cut(cutter, step)) is None:
                return None
            out = {"model": body.model, "created_at": _now(), "response": cut[1], "done": False}
            return {**out, "thinking": cut[0]} if cut[0] else out

        def finish(g, streamed=False):
            thinking, text, _ = _the_rest(cutter, g, streamed)
            out = {"model": body.model, "created_at": _now(), "response": text, "done": True,
                   "done_reason": _done_reason(g), "context": list(g.req.prompt) + produced,
                   **self._stats(g, started, load_ns)}
            return {**out, "thinking": thinking} if body.think else out

        self._respond(req, resp, body, self._running(group, model_id, body), chunk, finish,
                      {"model": body.model, "response": ""}, on_step=collect)

    def _templated(self, body, record: dict, system: str | None, loaded) -> str | None:
        """The prompt rendered by the request's `template`, or by the model's own Ollama
        template (from a create or a pull) when it is one this renderer runs; None: the
        model's GGUF chat template serves, as for /v1. Rendering stops once the prompt passes
        what the model's context can hold."""
        template = body.template or record.get("template")
        if not template:
            return None
        values = {"System": system or "", "Prompt": body.prompt or ""}
        try:
            return templates.render(template, values, max_bytes=self.dispatcher.prompt_byte_limit(loaded))
        except templates.TemplateLimit as exc:
            raise bad_request(f"'template': {exc}" if body.template else f"The model's template: {exc}") from None
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
        job = self.dispatcher.chat(creq)
        # With tools, text that may be a call is held back and parsed at the end; with
        # `think`, the <think>...</think> part goes in `thinking`, streamed or not.
        cutter = AnswerCutter(thinking=bool(body.think), holds_calls=job.parse_tools)

        def message(thinking: str, text: str, held: str) -> dict:
            msg: dict = {"role": "assistant", "content": text}
            if body.think:
                msg["thinking"] = thinking
            if held:
                content, calls = self.dispatcher.tool_parse(job, held)
                msg["content"] = text + (content or "")
                if calls:
                    msg["tool_calls"] = [{"function": {"name": c["function"]["name"],
                                                       "arguments": _arguments(c["function"]["arguments"])}}
                                         for c in calls]
            return msg

        def chunk(step):
            if (cut := _cut(cutter, step)) is None:
                return None
            msg = {"role": "assistant", "content": cut[1], **({"thinking": cut[0]} if cut[0] else {})}
            return {"model": body.model, "created_at": _now(), "message": msg, "done": False}

        def finish(g, streamed=False):
            return {"model": body.model, "created_at": _now(), "message": message(*_the_rest(cutter, g, streamed)),
                    "done": True, "done_reason": _done_reason(g), **self._stats(g, started, load_ns)}

        running = self._running(job.group, model_id, body)
        keep_alive = {"model": body.model, "message": {"role": "assistant", "content": ""}}
        self._respond(req, resp, body, running, chunk, finish, keep_alive)


def _arguments(raw) -> dict:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
