"""The OpenAI API (seed 004), at /v1 and at /mimik-ai/openai/v1."""
from __future__ import annotations

import time

import falcon

from .. import openai_format as fmt
from ..bodies import read_json_object
from ..errors import ApiError, bad_request, not_found
from ..inference import ChatJob, Inference
from ..openai_schema import RequestError, parse_chat, parse_completion, parse_embeddings
from ..store import KINDS, InvalidId, ModelNotFound
from ..tool_calls import may_become_call
from .sse import stream_events

PREFIXES = ("/v1", "/mimik-ai/openai/v1")
# A client that went away is noticed only when a write fails; during long silences
# (a request queued behind busy slots) a comment line makes that write happen.
PING_SECONDS = 10


def _parse(parser, body):
    try:
        return parser(body)
    except RequestError as exc:
        raise bad_request(str(exc)) from None


class ChatCompletions:
    def __init__(self, inference: Inference, settings):
        self.inference = inference
        self.settings = settings

    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        creq = _parse(parse_chat, body)
        job = self.inference.chat(creq)
        if creq.stream:
            stream_events(resp, self._stream(creq, job))
        else:
            resp.media = self._whole(creq, job)

    def _whole(self, creq, job: ChatJob) -> dict:
        model = job.loaded.model
        choices, completion = [], 0
        try:
            for i, gen in enumerate(job.gens):
                lps = []
                for step in gen.steps():
                    if step.logprob is not None:
                        lps.append(fmt.chat_logprob_entry(model.piece(step.token), step.logprob, model.piece))
                if gen.error:
                    raise ApiError(503, gen.error)
                content, calls = self.inference.tool_parse(job, gen.text.text)
                choices.append(fmt.chat_choice(i, content, calls, gen.finish_reason,
                                               {"content": lps} if creq.logprobs is not None else None))
                completion += gen.completion_tokens
                self.inference.record(creq.model, gen)
        finally:
            job.close()
        g0 = job.gens[0]
        return fmt.chat_completion(fmt.new_id("chatcmpl"), creq.model, choices,
                                   fmt.usage(g0.prompt_tokens, completion, g0.cached_tokens))

    def _stream(self, creq, job: ChatJob):
        gen, model = job.gens[0], job.loaded.model
        cid, created, name = fmt.new_id("chatcmpl"), int(time.time()), creq.model
        chunk = lambda delta, finish=None, lp=None: fmt.sse(  # noqa: E731
            fmt.chat_chunk(cid, name, created, delta, finish, lp))
        held = ""  # text kept back while it may still turn out to be a tool call
        deciding = job.parse_tools
        try:
            yield chunk({"role": "assistant", "content": ""})
            for step in gen.steps(ping_every=PING_SECONDS):
                if step is None:
                    yield fmt.SSE_PING
                    continue
                lp = None
                if step.logprob is not None:
                    lp = {"content": [fmt.chat_logprob_entry(model.piece(step.token), step.logprob, model.piece)]}
                text = step.text
                if deciding:
                    if job.forced_tool or may_become_call(held + text):
                        held += text
                        continue
                    text, held, deciding = held + text, "", False
                if text or lp:
                    yield chunk({"content": text}, None, lp)
            if gen.error:
                yield fmt.sse({"error": {"code": 503, "message": gen.error, "type": "server_error"}})
                return
            finish = gen.finish_reason
            if held:
                content, calls = self.inference.tool_parse(job, held)
                if calls:
                    if content:
                        yield chunk({"content": content})
                    yield chunk({"tool_calls": fmt.tool_call_deltas(calls)})
                    finish = "tool_calls"
                else:
                    yield chunk({"content": held})
            yield chunk({}, finish)
            if creq.include_usage:
                yield fmt.sse(fmt.usage_chunk(cid, name, created, fmt.usage(
                    gen.prompt_tokens, gen.completion_tokens, gen.cached_tokens)))
            yield fmt.SSE_DONE
        finally:
            # Runs when the stream ends and when gunicorn closes it after a disconnect:
            # the scheduler frees the slot within one decode step.
            job.close()
            self.inference.record(creq.model, gen)


class Completions:
    def __init__(self, inference: Inference, settings):
        self.inference = inference
        self.settings = settings

    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        creq = _parse(parse_completion, body)
        loaded, gens, prompts = self.inference.completion(creq)
        if creq.stream:
            stream_events(resp, self._stream(creq, loaded, gens[0], prompts[0]))
            return
        choices, completion, prompt_tokens = [], 0, 0
        try:
            for i, (gen, prompt) in enumerate(zip(gens, prompts)):
                entries = [(loaded.model.piece(s.token), s.logprob) for s in gen.steps()
                           if s.logprob is not None]
                if gen.error:
                    raise ApiError(503, gen.error)
                text = (prompt if creq.echo else "") + gen.text.text
                lp = (fmt.completion_logprobs(entries, loaded.model.piece, len(prompt) if creq.echo else 0)
                      if creq.logprobs is not None else None)
                choices.append(fmt.completion_choice(i, text, gen.finish_reason, lp))
                completion += gen.completion_tokens
                if i % creq.n == 0:
                    prompt_tokens += gen.prompt_tokens
                self.inference.record(creq.model, gen)
        finally:
            for g in gens:
                g.close()
        resp.media = fmt.completion(fmt.new_id("cmpl"), creq.model, choices,
                                    fmt.usage(prompt_tokens, completion, gens[0].cached_tokens))

    def _stream(self, creq, loaded, gen, prompt):
        cid, name = fmt.new_id("cmpl"), creq.model

        def chunk(text, finish=None, lp=None):
            return fmt.sse({"id": cid, "object": "text_completion", "created": int(time.time()),
                            "model": name, "choices": [fmt.completion_choice(0, text, finish, lp)]})

        try:
            if creq.echo:
                yield chunk(prompt)
            for step in gen.steps(ping_every=PING_SECONDS):
                if step is None:
                    yield fmt.SSE_PING
                    continue
                lp = None
                if step.logprob is not None:
                    lp = fmt.completion_logprobs([(loaded.model.piece(step.token), step.logprob)],
                                                 loaded.model.piece)
                if step.text or lp:
                    yield chunk(step.text, None, lp)
            if gen.error:
                yield fmt.sse({"error": {"code": 503, "message": gen.error, "type": "server_error"}})
                return
            yield chunk("", gen.finish_reason)
            if creq.include_usage:
                yield fmt.sse({"id": cid, "object": "text_completion", "created": int(time.time()),
                               "model": name, "choices": [],
                               "usage": fmt.usage(gen.prompt_tokens, gen.completion_tokens, gen.cached_tokens)})
            yield fmt.SSE_DONE
        finally:
            gen.close()
            self.inference.record(creq.model, gen)


class Embeddings:
    def __init__(self, inference: Inference, settings):
        self.inference = inference
        self.settings = settings

    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        ereq = _parse(parse_embeddings, body)
        vectors, n_tokens = self.inference.embed(ereq)
        resp.media = fmt.embedding_list(ereq.model, vectors, ereq.encoding_format, n_tokens)


class Models:
    """GET: the loaded models. POST {"model"}: load one now."""

    def __init__(self, inference: Inference, settings):
        self.inference = inference
        self.settings = settings

    def on_get(self, req, resp):
        data = [fmt.model_entry(m.id, m.meta.get("createdAt")) for m in self.inference.manager.loaded()]
        resp.media = {"object": "list", "data": data}

    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise bad_request("'model' is required: the id of a model in the registry")
        loaded = self.inference.model(model_id, KINDS)
        resp.media = fmt.model_entry(loaded.id, loaded.meta.get("createdAt"))


class ModelItem:
    """GET: one loaded model. DELETE: unload it (the file stays in the registry)."""

    def __init__(self, inference: Inference, settings):
        self.inference = inference

    def on_get(self, req, resp, model_id):
        for m in self.inference.manager.loaded():
            if m.id == model_id:
                resp.media = fmt.model_entry(m.id, m.meta.get("createdAt"))
                return
        raise ApiError(404, f"Model '{model_id}' is not loaded")

    def on_delete(self, req, resp, model_id):
        manager = self.inference.manager
        if not manager.unload(model_id):
            try:
                manager.store.get(model_id)
            except (ModelNotFound, InvalidId):
                raise not_found(model_id) from None
            raise ApiError(404, f"Model '{model_id}' is not loaded")
        resp.media = {"id": model_id, "object": "model", "deleted": True}


def add_routes(app: falcon.App, inference: Inference, settings) -> None:
    resources = {
        "/chat/completions": ChatCompletions(inference, settings),
        "/completions": Completions(inference, settings),
        "/embeddings": Embeddings(inference, settings),
        "/models": Models(inference, settings),
        "/models/{model_id}": ModelItem(inference, settings),
    }
    for prefix in PREFIXES:
        for path, resource in resources.items():
            app.add_route(prefix + path, resource)
