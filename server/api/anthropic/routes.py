"""The Anthropic Messages API: POST /v1/messages (streamed as SSE with stream: true) and
POST /v1/messages/count_tokens. Errors on them have Anthropic's shape (anthropic/family.py).

Anthropic clients take their base address from ANTHROPIC_BASE_URL, so /v1 alone is
enough: no /mimik-ai copy.
"""
from __future__ import annotations

from functools import partial

from modelyard.server.api.anthropic import format as fmt
from modelyard.server.api.anthropic.schema import parse_count_tokens, parse_messages, thinking_on
from modelyard.server.api import responding
from modelyard.server.api.family import SSE
from modelyard.server.api.responding import Running, run_to_end
from modelyard.server.http.bodies import read_json_object
from modelyard.server.inference.dispatch import Dispatcher


class Messages:
    def __init__(self, dispatcher: Dispatcher, settings):
        self.dispatcher = dispatcher
        self.settings = settings

    def on_post(self, req, resp):
        body, creq = parse_messages(read_json_object(req, self.settings.max_body_size))
        job = self.dispatcher.chat(creq)
        parse = partial(self.dispatcher.tool_parse, job) if job.parse_tools else None
        shaper = fmt.Shaper(body.model, thinking_on(body), parse, job.forced_tool)
        running = Running(job.group, job.loaded.id, self.dispatcher.record)
        if body.stream:
            responding.stream(resp, running, _Events(shaper), self.settings.keepalive_seconds)
            return
        run_to_end(req, running)
        gen = job.gens[0]
        resp.media = shaper.whole(gen.text.text, gen.finish_reason, gen.text.matched,
                                  gen.prompt_tokens, gen.completion_tokens)


class _Events:
    """Anthropic's stream: its named SSE events, cut into blocks by the Shaper."""

    content_type = SSE

    def __init__(self, shaper: fmt.Shaper):
        self.shaper = shaper

    def opening(self, gen):
        return self.shaper.start(gen.prompt_tokens)

    def step(self, gen, step):
        return self.shaper.feed(step.text)

    def closing(self, gen):
        return self.shaper.finish(gen.finish_reason, gen.text.matched, gen.completion_tokens)

    def ending(self):
        return ()

    def error(self, gen, message: str):
        yield fmt.error_event(503, message)

    def ping(self) -> bytes:
        return fmt.PING


class CountTokens:
    def __init__(self, dispatcher: Dispatcher, settings):
        self.dispatcher = dispatcher
        self.settings = settings

    def on_post(self, req, resp):
        creq = parse_count_tokens(read_json_object(req, self.settings.max_body_size))
        resp.media = {"input_tokens": self.dispatcher.count_chat_tokens(creq)}

