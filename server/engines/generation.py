"""The request side of a generation: tokens from the scheduler become text, with stop strings.

This runs in the HTTP thread that serves the request, so the scheduler thread never
spends time on UTF-8, stop strings or JSON.
"""
from __future__ import annotations

import codecs
import queue
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from .generator import GenRequest, Generator


class TextAssembler:
    """Token pieces in, text out; holds back text that may be the start of a stop string."""

    def __init__(self, piece: Callable[[int], bytes], stops: list[str] | tuple = ()):
        self.piece = piece
        self.stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")("ignore")
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, token: int) -> str:
        if self.stopped:
            return ""
        self.text += self._decoder.decode(self.piece(token))
        return self._emit(final=False)

    def finish(self) -> str:
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self.stopped:
            return ""
        if self.stops:
            start = max(0, self.sent - self._longest)
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                cut = min(hits)
                self.text = self.text[:cut]
                self.stopped = True
                return self._take(len(self.text))
        if final or not self.stops:
            return self._take(len(self.text))
        return self._take(len(self.text) - self._held())

    def _held(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        tail = self.text[max(self.sent, len(self.text) - self._longest):]
        for k in range(len(tail), 0, -1):
            if any(s.startswith(tail[-k:]) for s in self.stops):
                return k
        return 0

    def _take(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out = self.text[self.sent:upto]
        self.sent = upto
        return out


@dataclass
class Step:
    """One piece of output: the text it adds, and its token (with logprobs when asked)."""

    text: str
    token: int | None = None
    logprob: tuple | None = None


class Generation:
    """Iterate a submitted request's output. close() (or leaving a `with`) cancels it."""

    def __init__(self, engine: Generator, req: GenRequest, stops: list[str]):
        self.engine = engine
        self.req = req
        self.text = TextAssembler(engine.model.piece, stops)
        self.prompt_tokens = len(req.prompt)
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.t_submit = req.submitted
        self.t_first: float | None = None
        self.t_end: float | None = None
        engine.submit(req)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        # The scheduler notices within one decode step and frees the slot.
        self.req.cancel.set()

    def steps(self, ping_every: float | None = None) -> Iterator[Step | None]:
        """Yield Steps until the end; None when `ping_every` seconds pass with nothing."""
        out = self.req.out
        while True:
            try:
                event = out.get(timeout=ping_every)
            except queue.Empty:
                yield None
                continue
            kind = event[0]
            if kind == "tok":
                if self.t_first is None:
                    self.t_first = time.monotonic()
                self.completion_tokens += 1
                delta = self.text.feed(event[1])
                yield Step(delta, event[1], event[2])
                if self.text.stopped:
                    self.finish_reason = "stop"
                    self.close()
                    self._drain()
                    return
            elif kind == "start":
                self.cached_tokens = event[1]
            elif kind == "end":
                self.t_end = time.monotonic()
                self.finish_reason = self.finish_reason or ("length" if event[1] == "length" else "stop")
                tail = self.text.finish()
                if tail:
                    yield Step(tail)
                return
            else:
                self.error = event[1]
                self.t_end = time.monotonic()
                return

    def _drain(self) -> None:
        """Wait for the scheduler to release the slot, so `usage` and metrics are final."""
        while True:
            event = self.req.out.get()
            if event[0] in ("end", "err"):
                self.t_end = time.monotonic()
                return

    def run(self) -> str:
        """Generate to the end; the whole text."""
        for _ in self.steps():
            pass
        return self.text.text

    @property
    def tokens_per_second(self) -> float | None:
        if self.t_first is None or self.t_end is None or self.completion_tokens < 2:
            return None
        span = self.t_end - self.t_first
        return (self.completion_tokens - 1) / span if span > 0 else None
