"""One response path for every API family's generations.

A generation is either run to its end or streamed. Either way the driver here watches the
client and cancels on hang-up, sends the family's keep-alive while a request waits for a
slot or its prompt, closes the generation whatever happens (the scheduler frees the slot
within one decode step), and records the metrics under the resolved model id. A family
supplies only an `Encoder` for its stream and builds its whole answer from the finished
generations, as llama.cpp's server serializes one result per format
(tools/server/server-task.cpp: to_json_oaicompat_chat, to_json_anthropic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import falcon

from modelyard.server.http.disconnect import ClientWatch
from modelyard.server.http.errors import ApiError
from modelyard.server.http.sse import stream_events
from modelyard.server.inference.llama.streams import Generation, Group, Step



class Encoder(Protocol):
    """A family's stream format. Each method returns the bytes to send, already framed."""

    content_type: str

    def opening(self, gen: Generation) -> Iterable[bytes]: ...

    def step(self, gen: Generation, step: Step) -> Iterable[bytes]: ...

    def closing(self, gen: Generation) -> Iterable[bytes]: ...

    def ending(self) -> Iterable[bytes]: ...

    def error(self, gen: Generation, message: str) -> Iterable[bytes]: ...

    def ping(self) -> bytes: ...


@dataclass
class Running:
    """A request's generations, and what closing them involves."""

    group: Group
    model_id: str  # resolved: the id metrics are recorded under
    record: Callable[[str, Generation], None]
    after: Callable[[], None] | None = None  # a family's own clean-up (Ollama's keep_alive 0)

    def close(self) -> None:
        self.group.close()
        for gen in self.group.gens:
            self.record(self.model_id, gen)
        if self.after is not None:
            self.after()


def run_to_end(req: falcon.Request, running: Running,
               on_step: Callable[[Generation, Step], None] | None = None) -> None:
    """Read every step (on_step(gen, step) for each) and close. A client that hangs up
    meanwhile cancels the generation (499); a generation that failed is a 503."""
    watch = ClientWatch(req)
    try:
        for item in running.group.steps(wait=watch.interval):
            if watch.gone():
                raise ApiError(499, "The client closed the connection before the answer was ready")
            if item is not None and item[1] is not None and on_step is not None:
                on_step(*item)
    finally:
        running.close()
    failed = next((g.error for g in running.group.gens if g.error), None)
    if failed:
        raise ApiError(503, failed)


def stream(resp: falcon.Response, running: Running, encoder: Encoder, keepalive_seconds: float) -> None:
    """Answer with the generation's stream in the encoder's format, sent as it is made.

    While no token comes (the request waits for a slot, or its prompt is being read) the
    encoder's keep-alive goes out every `keepalive_seconds`: it keeps proxies from timing
    out, and it is the write that notices a client that went away (a stream sees a
    hang-up only when a write fails)."""
    stream_events(resp, _events(running, encoder, keepalive_seconds))
    resp.content_type = encoder.content_type


def _events(running: Running, encoder: Encoder, keepalive_seconds: float) -> Iterator[bytes]:
    try:
        for gen in running.group.gens:
            yield from encoder.opening(gen)
        for item in running.group.steps(wait=keepalive_seconds):
            if item is None:
                yield encoder.ping()
                continue
            gen, step = item
            if step is not None:
                yield from encoder.step(gen, step)
            elif gen.error:
                yield from encoder.error(gen, gen.error)
                return
            else:
                yield from encoder.closing(gen)
        yield from encoder.ending()
    finally:
        # Runs when the stream ends and when gunicorn closes it after a disconnect.
        running.close()
