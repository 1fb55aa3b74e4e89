"""The Anthropic Messages API: POST /v1/messages (streamed as SSE with stream: true) and
POST /v1/messages/count_tokens. Errors on them have Anthropic's shape (http/errors.py).

Anthropic clients take their base address from ANTHROPIC_BASE_URL, so /v1 alone is
enough: no /mimik-ai copy.
"""
from __future__ import annotations

from functools import partial
from typing import Iterator


from modelyard.server.api.anthropic import format as fmt
from modelyard.server.api.anthropic.schema import parse_count_tokens, parse_messages, thinking_on
from modelyard.server.api.generating import run_to_end
from modelyard.server.http.bodies import read_json_object
from modelyard.server.http.sse import stream_events
from modelyard.server.inference.dispatch import ChatJob, Dispatcher

# While no token comes (the prompt is processed, or the request waits for a slot), a ping
# event this often keeps proxies from timing out and makes a write that notices a client
# that went away.
PING_SECONDS = 10


class Messages:
    def __init__(self, dispatcher: Dispatcher, settings):
        self.dispatcher = dispatcher
        self.settings = settings

    def on_post(self, req, resp):
        body, creq = parse_messages(read_json_object(req, self.settings.max_body_size))
        job = self.dispatcher.chat(creq)
        parse = partial(self.dispatcher.tool_parse, job) if job.parse_tools else None
        shaper = fmt.Shaper(body.model, thinking_on(body), parse, job.forced_tool)
        if body.stream:
            stream_events(resp, self._stream(job, shaper))
            return
        try:
            run_to_end(req, job.group)
        finally:
            self._close(job)
        gen = job.gens[0]
        resp.media = shaper.whole(gen.text.text, gen.finish_reason, gen.text.matched,
                                  gen.prompt_tokens, gen.completion_tokens)

    def _stream(self, job: ChatJob, shaper: fmt.Shaper) -> Iterator[bytes]:
        try:
            yield from shaper.start(job.gens[0].prompt_tokens)
            for item in job.group.steps(wait=PING_SECONDS):
                if item is None:
                    yield fmt.PING
                    continue
                gen, step = item
                if step is not None:
                    yield from shaper.feed(step.text)
                elif gen.error:
                    yield fmt.error_event(503, gen.error)
                    return
                else:
                    yield from shaper.finish(gen.finish_reason, gen.text.matched, gen.completion_tokens)
        finally:
            # Runs when the stream ends and when gunicorn closes it after a disconnect.
            self._close(job)

    def _close(self, job: ChatJob) -> None:
        job.group.close()  # the scheduler frees the slot within one decode step
        for gen in job.gens:
            self.dispatcher.record(job.loaded.id, gen)


class CountTokens:
    def __init__(self, dispatcher: Dispatcher, settings):
        self.dispatcher = dispatcher
        self.settings = settings

    def on_post(self, req, resp):
        creq = parse_count_tokens(read_json_object(req, self.settings.max_body_size))
        resp.media = {"input_tokens": self.dispatcher.count_chat_tokens(creq)}

