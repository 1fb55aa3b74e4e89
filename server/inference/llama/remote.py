"""The server's side of a runner process: the engines of a GGUF model, seen from the server.

RemoteScheduler, RemoteEmbedder and RemoteProjector have the interfaces of the in-process
Scheduler, Embedder and Projector, so the dispatcher and the routes do not know the
difference. The vocabulary is loaded here too (vocab_only: no weights), so tokenizing,
detokenizing and grammars stay in the request threads.

A runner that dies (a native crash, an abort, the kernel's OOM killer) or hangs (no step
for `hang_timeout` seconds while work is queued) fails only its own requests, with a
message that says what happened; the model manager starts a new runner on the next
request, since the engine is no longer `alive`.
"""
from __future__ import annotations

import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from modelyard.server.inference.events import FINAL, Failed
from modelyard.server.inference.images import ImageError
from modelyard.server.inference.metrics import InferenceMetrics
from modelyard.server.inference.llama.context_thread import EngineClosed
from modelyard.server.inference.llama.model import ModelLoadError

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0  # a big model from a slow disk
CLOSE_TIMEOUT = 30.0
WATCH_SECONDS = 1.0  # how often the watchdog looks for a hang
IDLE = (0, 0, 0, 0, 0, ((), ()))  # a runner's counters before its first step


def _why(returncode: int | None) -> str:
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"signal {-returncode}, {name}"
    return f"exit code {returncode}"


class _Call:
    __slots__ = ("done", "reply")

    def __init__(self):
        self.done = threading.Event()
        self.reply = None


class _RemoteCancel:
    """A GenRequest's cancel flag whose set() tells the runner; it frees the slot within
    one decode step, as in-process."""

    __slots__ = ("runner", "rid", "flag")

    def __init__(self, runner: "Runner", rid: int):
        self.runner, self.rid, self.flag = runner, rid, False

    def set(self) -> None:
        if not self.flag:
            self.flag = True
            self.runner.send(("cancel", self.rid))

    def is_set(self) -> bool:
        return self.flag


class Runner:
    """One runner process: start, talk, watch, stop."""

    def __init__(self, spec: dict, name: str, metrics: InferenceMetrics, hang_timeout: float = 300.0):
        self.name = name
        self.metrics = metrics
        self.hang_timeout = hang_timeout
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                # The model's name is for `ps` and the logs; the spec comes over the socket.
                [sys.executable, "-m", "modelyard.server.inference.llama.runner", str(theirs.fileno()), name],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: dict[int, object] = {}  # rid -> GenRequest
        self.calls: dict[int, _Call] = {}
        self.closing = False
        self.dead: str | None = None  # why, once it stopped
        # (waiting, running, prompt tokens decoded, generated tokens decoded, KV cells of running
        # requests, (adapter files running, waiting)): Scheduler.counters after the last step
        self.counters = IDLE
        self.info = self._handshake(spec)
        self._gauges = metrics.runner_gauges(name)
        self._last = time.monotonic()
        self._ended = threading.Event()
        # The reader only reads (it is on every token's path: a poll there was a syscall and
        # a selector per token); the watchdog looks for hangs once a second.
        self._reader = threading.Thread(target=self._read, name=f"runner-{name}", daemon=True)
        self._reader.start()
        threading.Thread(target=self._watchdog, name=f"runner-{name}-watchdog", daemon=True).start()

    def _handshake(self, spec: dict) -> dict:
        """The runner's first answer: its engine's facts, or why it could not load."""
        self.send(spec)
        try:
            if not self.conn.poll(LOAD_TIMEOUT):
                self.proc.kill()
                self.proc.wait()
                raise ModelLoadError(f"the engine did not load within {LOAD_TIMEOUT:.0f} s")
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                raise ModelLoadError(f"the engine stopped while loading ({_why(self.proc.wait())})") from None
            if msg[0] == "failed":
                self.proc.wait()
                raise ModelLoadError(msg[1])
            return msg[1]
        except ModelLoadError:
            self.conn.close()
            raise

    # ---- talking ---------------------------------------------------------------------

    def send(self, message) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except OSError:
            pass  # it died: the reader fails what was in flight

    def next_id(self) -> int:
        return next(self._ids)

    def check(self) -> None:
        if self.dead or self.closing:
            raise EngineClosed(self.dead or f"model '{self.name}' is being unloaded")

    def call(self, op: str, *args):
        """Send a request and wait for its reply; EngineClosed if the runner stops first."""
        self.check()
        rid, call = self.next_id(), _Call()
        self.calls[rid] = call
        self.check_after_register(self.calls, rid)
        self.send((op, rid, *args))
        call.done.wait()
        self.calls.pop(rid, None)
        if call.reply is None:
            raise EngineClosed(self.dead or f"model '{self.name}' was unloaded")
        return call.reply

    def check_after_register(self, table: dict, rid: int) -> None:
        if len(self.requests) + len(self.calls) == 1:
            self._last = time.monotonic()  # idle until now: the hang clock starts here
        # The reader sets `dead` before it fails what is registered: whatever registered
        # too late to be failed by it sees `dead` here.
        if not self.alive:
            table.pop(rid, None)
            self.check()

    @property
    def alive(self) -> bool:
        return self.dead is None and not self.closing

    # ---- the reader thread -----------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    break
                self._last = time.monotonic()
                op = msg[0]
                if op == "events":
                    self._events(msg[1], msg[2])
                else:  # a reply: ("embedded" | "vprompt", rid, ...)
                    call = self.calls.get(msg[1])
                    if call is not None:
                        call.reply = msg
                        call.done.set()
        finally:
            self._ended.set()
        self._stopped()

    def _events(self, events: list, counters: tuple) -> None:
        for rid, event in events:
            req = self.requests.get(rid)
            if req is None:
                continue
            if isinstance(event, FINAL):
                self.requests.pop(rid, None)
            req.out.put(event)
        self._gauges.update(self.counters, counters)
        self.counters = counters

    def _watchdog(self) -> None:
        """Kill a runner that has work and made no step for hang_timeout seconds."""
        while not self._ended.wait(WATCH_SECONDS):
            busy = self.requests or self.calls
            if busy and not self.closing and time.monotonic() - self._last > self.hang_timeout:
                log.error("engine for model %s made no progress for %.0f s with work queued; killing "
                          "its runner (pid %d)", self.name, self.hang_timeout, self.pid)
                self.dead = (f"the engine for model '{self.name}' hung (no progress for "
                             f"{self.hang_timeout:.0f} s) and was stopped; it restarts on the next request")
                self.proc.kill()
                return

    def _stopped(self) -> None:
        try:
            code = self.proc.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.closing and self.dead is None:
            message = f"model '{self.name}' was unloaded"
        else:
            if self.dead is None:
                self.dead = (f"the engine for model '{self.name}' stopped ({_why(code)}); "
                             "it restarts on the next request")
                log.error("engine for model %s stopped (%s); %d requests failed", self.name, _why(code),
                          len(self.requests) + len(self.calls))
            message = self.dead
            self.metrics.engine_restarted(self.name)
        for rid in list(self.requests):
            req = self.requests.pop(rid, None)
            if req is not None:
                req.out.put(Failed(message))
        for call in list(self.calls.values()):
            call.done.set()
        self._gauges.update(self.counters, (0, 0, *self.counters[2:4]))
        self.counters = (0, 0, *self.counters[2:4], *IDLE[4:])
        self.conn.close()

    def close(self) -> None:
        """Stop the runner: its in-flight requests fail with 'unloaded', its memory goes
        back to the operating system."""
        if self.closing:
            return
        self.closing = True
        self.send(("close",))
        self._reader.join(CLOSE_TIMEOUT + 5)
        if self.proc.poll() is None:
            self.proc.kill()
            self._reader.join()


class _RemoteEngine:
    """What both engines share: the runner, the vocabulary, life and death."""

    def __init__(self, runner: Runner, model):
        self.runner = runner
        self.model = model  # vocab_only: tokenize, piece, grammars
        self.name = runner.name
        self.n_params = runner.info.get("n_params")  # the weights' parameter count
        self.kv_cache_type = runner.info.get("kv_cache_type")

    @property
    def alive(self) -> bool:
        return self.runner.alive

    @property
    def pid(self) -> int:
        return self.runner.pid

    def close(self) -> None:
        self.runner.close()


class RemoteScheduler(_RemoteEngine):
    """A Scheduler in a runner: submit() sends the request, events come back per step."""

    def __init__(self, runner: Runner, model):
        super().__init__(runner, model)
        self.n_ctx_slot = runner.info["n_ctx_slot"]
        # What a token costs in its KV cache as llama.cpp measures it (the Scheduler's
        # attribute of the same name).
        self.kv_bytes_per_token = runner.info.get("kv_bytes_per_token")

    @property
    def context_size(self) -> int:
        return self.n_ctx_slot

    @property
    def in_flight(self) -> int:
        return self.queue_depth + self.active

    def submit(self, req):
        self.runner.check()
        rid = self.runner.next_id()
        req.cancel = _RemoteCancel(self.runner, rid)
        self.runner.requests[rid] = req
        self.runner.check_after_register(self.runner.requests, rid)
        refs = tuple((span.handle, span.index) for span in req.media)
        self.runner.send(("gen", rid, req.prompt, req.params, req.max_tokens, req.logprobs, refs, req.priority,
                          req.adapters))
        return req

    @property
    def queue_depth(self) -> int:
        return self.runner.counters[0]

    @property
    def active(self) -> int:
        return self.runner.counters[1]

    @property
    def kv_cells(self) -> int:
        return self.runner.info["kv_cells"]

    @property
    def kv_cells_used(self) -> int:
        return self.runner.counters[4]

    @property
    def slot_count(self) -> int:
        return self.runner.info["slots"]

    def adapter_files(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.runner.counters[5]


class RemoteEmbedder(_RemoteEngine):
    def __init__(self, runner: Runner, model):
        super().__init__(runner, model)
        self.max_input = runner.info["max_input"]
        self.n_embd = runner.info["n_embd"]

    @property
    def context_size(self) -> int:
        return self.max_input

    @property
    def in_flight(self) -> int:
        return 0  # embeddings run at once, not queued in slots

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=True)

    def embed(self, inputs: list[list[int]]):
        _, _, vectors, error = self.runner.call("embed", inputs)
        if error:
            raise RuntimeError(error)
        return vectors


@dataclass(frozen=True)
class RemoteSpan:
    """An image of a prompt whose embeddings the runner holds (under `handle`)."""

    start: int
    n_tokens: int
    handle: int
    index: int

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


@dataclass
class RemotePrompt:
    tokens: list
    media: tuple[RemoteSpan, ...]


class RemoteProjector:
    """A vlm's projector in the runner: images are encoded there, and stay there."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def prompt(self, text: str, add_special: bool, images: list) -> RemotePrompt:
        _, rid, tokens, spans, error_kind, message = self.runner.call("vprompt", text, add_special, list(images))
        if error_kind == "image":
            raise ImageError(message)
        if error_kind:
            raise EngineClosed(message)
        return RemotePrompt(tokens, tuple(RemoteSpan(s, n, rid, i) for i, (s, n) in enumerate(spans)))

    def close(self) -> None:
        pass  # the runner's


def start(spec: dict, name: str, model, metrics: InferenceMetrics, hang_timeout: float = 300.0):
    """(engine, projector) for a GGUF model, in a new runner; ModelLoadError if it fails.

    `model` is the server's vocab_only LlamaModel of the same file."""
    runner = Runner(spec, name, metrics, hang_timeout)
    if spec["kind"] == "embed":
        return RemoteEmbedder(runner, model), None
    projector = RemoteProjector(runner) if spec.get("mmproj") else None
    return RemoteScheduler(runner, model), projector



