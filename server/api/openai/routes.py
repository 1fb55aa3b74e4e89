"""The OpenAI API, at /v1 and at /mimik-ai/openai/v1."""
from __future__ import annotations

import time

from modelyard.server.api import responding
from modelyard.server.api.family import SSE
from modelyard.server.api.responding import Running, run_to_end
from modelyard.server.api.openai import format as fmt
from modelyard.server.http.bodies import read_json_object, read_model
from modelyard.server.http.errors import ApiError, bad_request, not_found
from modelyard.server.http.sse import PING, frame
from modelyard.server.inference.llama.streams import Generation, Group
from modelyard.server.inference.dispatch import ChatJob, Dispatcher
from modelyard.server.api.openai.schema import (LoadModelBody, RequestError, parse_chat, parse_completion,
                                               parse_embeddings)
from modelyard.server.registry.errors import InvalidId, ModelNotFound
from modelyard.server.shared.facts import KINDS
from modelyard.server.inference.answers import AnswerCutter
from modelyard.server.api.serving import with_serving


def _parse(parser, body):
    try:
        return parser(body)
    except RequestError as exc:
        raise bad_request(str(exc)) from None


def usage_of(gens: list[Generation], n: int) -> dict:
    """Usage summed over a request's choices; each prompt counts once, not once per choice."""
    firsts = [g for g in gens if g.index % n == 0]  # the first choice of each prompt
    return fmt.usage(sum(g.prompt_tokens for g in firsts), sum(g.completion_tokens for g in gens),
                     sum(g.cached_tokens for g in firsts))


class _Generating:
    """What the chat and completion routes share: a request's generations, run to the end
    (every choice's (piece, logprob) entries kept) or streamed, through api/responding.py."""

    def __init__(self, inference: Dispatcher, settings):
        self.inference = inference
        self.settings = settings

    def _running(self, loaded, group: Group) -> Running:
        return Running(group, loaded.id, self.inference.record)

    def _finish(self, req, running: Running) -> list[list[tuple[bytes, tuple]]]:
        """Generate every choice to the end: each one's (piece, logprobs) entries."""
        piece = running.group.gens[0].engine.model.piece
        entries: list[list] = [[] for _ in running.group.gens]

        def keep(gen, step):
            if step.logprob is not None:
                entries[gen.index].append((piece(step.token), step.logprob))
        run_to_end(req, running, keep)
        return entries


class _Chunks:
    """OpenAI's SSE stream: chunks per choice, the usage when asked for, then [DONE]."""

    content_type = SSE

    def __init__(self, creq, gens: list[Generation]):
        self.creq, self.gens = creq, gens

    def ping(self) -> bytes:
        return PING

    def error(self, gen, message: str):
        yield frame({"error": {"code": 503, "message": message, "type": "server_error"}})

    def ending(self):
        if self.creq.include_usage:
            yield frame(self.usage(usage_of(self.gens, self.creq.n)))
        yield fmt.SSE_DONE


class ChatCompletions(_Generating):
    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        creq = _parse(parse_chat, body)
        job = self.inference.chat(creq)
        running = self._running(job.loaded, job.group)
        if creq.stream:
            responding.stream(resp, running, _ChatChunks(creq, job, self.inference), self.settings.keepalive_seconds)
            return
        entries = self._finish(req, running)
        piece = job.loaded.model.piece
        choices = []
        for gen, lps in zip(job.gens, entries):
            content, calls = self.inference.tool_parse(job, gen.text.text)
            lp = None
            if creq.logprobs is not None:
                lp = {"content": [fmt.chat_logprob_entry(p, v, piece) for p, v in lps]}
            choices.append(fmt.chat_choice(gen.index, content, calls, gen.finish_reason, lp))
        resp.media = fmt.chat_completion(fmt.new_id("chatcmpl"), creq.model, choices, usage_of(job.gens, creq.n))


class _ChatChunks(_Chunks):
    """Chat stream chunks, one choice at a time. While a choice's text may still turn
    out to be a tool call it is held back (inference/answers.py), and sent as tool_calls
    or text at its end."""

    def __init__(self, creq, job: ChatJob, inference: Dispatcher):
        super().__init__(creq, job.gens)
        self.cid, self.created, self.name = fmt.new_id("chatcmpl"), int(time.time()), creq.model
        self.job, self.inference, self.piece = job, inference, job.loaded.model.piece
        self.cutters = {g.index: AnswerCutter(holds_calls=job.parse_tools, forced=job.forced_tool)
                        for g in job.gens}

    def _chunk(self, i, delta, finish=None, lp=None) -> bytes:
        return frame(fmt.chat_chunk(self.cid, self.name, self.created, delta, finish, lp, index=i))

    def opening(self, gen):
        yield self._chunk(gen.index, {"role": "assistant", "content": ""})

    def step(self, gen, step):
        i, lp = gen.index, None
        if step.logprob is not None:
            lp = {"content": [fmt.chat_logprob_entry(self.piece(step.token), step.logprob, self.piece)]}
        text = "".join(piece for _, piece in self.cutters[i].feed(step.text))
        if text or lp:
            yield self._chunk(i, {"content": text}, None, lp)

    def closing(self, gen):
        i, finish = gen.index, gen.finish_reason
        segments, held = self.cutters[i].finish()
        if segments:
            yield self._chunk(i, {"content": "".join(piece for _, piece in segments)})
        if held:
            content, calls = self.inference.tool_parse(self.job, held)
            if calls:
                if content:
                    yield self._chunk(i, {"content": content})
                yield self._chunk(i, {"tool_calls": fmt.tool_call_deltas(calls)})
                finish = "tool_calls"
            else:
                yield self._chunk(i, {"content": held})
        yield self._chunk(i, {}, finish)

    def usage(self, use: dict) -> dict:
        return fmt.usage_chunk(self.cid, self.name, self.created, use)


class Completions(_Generating):
    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        creq = _parse(parse_completion, body)
        loaded, group, prompts = self.inference.completion(creq)
        running = self._running(loaded, group)
        if creq.stream:
            responding.stream(resp, running, _CompletionChunks(creq, group, loaded, prompts),
                              self.settings.keepalive_seconds)
            return
        entries = self._finish(req, running)
        piece = loaded.model.piece
        choices = []
        for gen, lps, prompt in zip(group.gens, entries, prompts):
            text = (prompt if creq.echo else "") + gen.text.text
            lp = (fmt.completion_logprobs(lps, piece, len(prompt) if creq.echo else 0)
                  if creq.logprobs is not None else None)
            choices.append(fmt.completion_choice(gen.index, text, gen.finish_reason, lp))
        resp.media = fmt.completion(fmt.new_id("cmpl"), creq.model, choices, usage_of(group.gens, creq.n))


class _CompletionChunks(_Chunks):
    """Legacy completion stream chunks: the prompt first when echo is set, then text."""

    def __init__(self, creq, group: Group, loaded, prompts: list[str]):
        super().__init__(creq, group.gens)
        self.cid, self.created, self.name = fmt.new_id("cmpl"), int(time.time()), creq.model
        self.echo, self.prompts, self.piece = creq.echo, prompts, loaded.model.piece

    def _chunk(self, i, text, finish=None, lp=None) -> bytes:
        return frame(fmt.completion_chunk(self.cid, self.name, self.created, i, text, finish, lp))

    def opening(self, gen):
        if self.echo:
            yield self._chunk(gen.index, self.prompts[gen.index])

    def step(self, gen, step):
        lp = None
        if step.logprob is not None:
            lp = fmt.completion_logprobs([(self.piece(step.token), step.logprob)], self.piece)
        if step.text or lp:
            yield self._chunk(gen.index, step.text, None, lp)

    def closing(self, gen):
        yield self._chunk(gen.index, "", gen.finish_reason)

    def usage(self, use: dict) -> dict:
        return fmt.usage_chunk(self.cid, self.name, self.created, use, obj="text_completion")


class Embeddings:
    def __init__(self, inference: Dispatcher, settings):
        self.inference = inference
        self.settings = settings

    def on_post(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        ereq = _parse(parse_embeddings, body)
        vectors, n_tokens = self.inference.embed(ereq)
        resp.media = fmt.embedding_list(ereq.model, vectors, ereq.encoding_format, n_tokens)


class Models:
    """GET: the loaded models. POST {"model"}: load one now."""

    def __init__(self, inference: Dispatcher, settings):
        self.inference = inference
        self.settings = settings

    def on_get(self, req, resp):
        manager = self.inference.manager
        data = [with_serving(fmt.model_entry(m.id, m.meta.get("createdAt")), manager, m.id) for m in manager.loaded()]
        resp.media = {"object": "list", "data": data}

    def on_post(self, req, resp):
        body = read_model(req, LoadModelBody, self.settings.max_body_size)
        loaded = self.inference.model(body.model, KINDS)
        resp.media = with_serving(fmt.model_entry(loaded.id, loaded.meta.get("createdAt")),
                                  self.inference.manager, loaded.id)


class ModelItem:
    """GET: one loaded model. DELETE: unload it (the file stays in the registry)."""

    def __init__(self, inference: Dispatcher, settings):
        self.inference = inference

    def on_get(self, req, resp, model_id):
        for m in self.inference.manager.loaded():
            if m.id == model_id:
                resp.media = with_serving(fmt.model_entry(m.id, m.meta.get("createdAt")),
                                          self.inference.manager, m.id)
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

