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

from modelyard.server.inference.events import Ended, Event, Started, Token
from modelyard.server.inference.llama.scheduler import GenRequest, Scheduler


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
        self.matched: str | None = None  # the stop string that ended the text

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
            hits = [(i, s) for i, s in ((self.text.find(s, start), s) for s in self.stops) if i >= 0]
            if hits:
                cut, self.matched = min(hits, key=lambda hit: hit[0])
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


class _Tagged:
    """The `out` queue the scheduler puts a request's events on.

    It tags each event with its generation's index and puts it on a queue that all the
    generations of one HTTP request share, so the thread serving that request waits on
    one queue for all n of them, and takes their steps in the order they were made.
    """

    __slots__ = ("events", "index")

    def __init__(self, events: queue.SimpleQueue, index: int):
        self.events = events
        self.index = index

    def put(self, event) -> None:
        self.events.put((self.index, event))


class Generation:
    """One submitted sequence: its text, counts and end. close() (or leaving a `with`)
    cancels it. Started and read through a Group (Group.start, Group.steps)."""

    def __init__(self, engine: Scheduler, req: GenRequest, stops: list[str],
                 events: queue.SimpleQueue, index: int):
        self.engine = engine
        self.req = req
        self.index = index  # the choice's index in the response
        req.out = _Tagged(events, index)
        self.text = TextAssembler(engine.model.piece, stops)
        self.prompt_tokens = len(req.prompt)
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.done = False  # the scheduler has released the slot: counts are final
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

    def take(self, event: Event) -> Step | None:
        """Apply one event from the scheduler; the Step it makes, if any."""
        if isinstance(event, Token):
            if self.text.stopped:
                # A stop string ended the text and the slot is being released; tokens
                # decoded meanwhile are not part of the answer.
                return None
            if self.t_first is None:
                self.t_first = time.monotonic()
            self.completion_tokens += 1
            step = Step(self.text.feed(event.token), event.token, event.logprobs)
            if self.text.stopped:
                self.finish_reason = "stop"
                self.close()
            return step
        if isinstance(event, Started):
            self.cached_tokens = event.cached
            return None
        self.t_end = time.monotonic()
        self.done = True
        if isinstance(event, Ended):
            self.finish_reason = self.finish_reason or ("length" if event.reason == "length" else "stop")
            tail = self.text.finish()
            return Step(tail) if tail else None
        if not self.text.stopped:  # after a stop string the answer is already whole (Failed)
            self.error = event.message
        return None

    @property
    def tokens_per_second(self) -> float | None:
        if self.t_first is None or self.t_end is None or self.completion_tokens < 2:
            return None
        span = self.t_end - self.t_first
        return (self.completion_tokens - 1) / span if span > 0 else None


class Group:
    """The generations of one request (n choices of each prompt), read together; one
    alone is a group of one.

    They share one event queue, so their steps come out as the scheduler makes them,
    interleaved, and the reader blocks on that one queue instead of polling each.
    """

    def __init__(self):
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.gens: list[Generation] = []

    def start(self, engine: Scheduler, req: GenRequest, stops: list[str]) -> Generation:
        gen = Generation(engine, req, stops, self.events, len(self.gens))
        self.gens.append(gen)
        return gen

    def steps(self, wait: float | None = None) -> Iterator[tuple[Generation, Step | None] | None]:
        """(gen, step) as they come, then (gen, None) once when gen has ended; None
        whenever `wait` seconds pass with no event, so the reader can look around."""
        left = sum(not g.done for g in self.gens)
        while left:
            try:
                index, event = self.events.get(timeout=wait)
            except queue.Empty:
                yield None
                continue
            gen = self.gens[index]
            step = gen.take(event)
            if step is not None:
                yield gen, step
            if gen.done:
                left -= 1
                yield gen, None

    def close(self) -> None:
        for g in self.gens:
            g.close()
