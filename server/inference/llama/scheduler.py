"""The text-generation engine: one llama.cpp context, one scheduler thread, many requests.

Continuous batching as llama.cpp's own server does it. Each request gets a slot (a
sequence id in the shared context). Every step, the scheduler builds one batch that
carries the next token of every generating slot and a chunk of every waiting prompt,
calls llama_decode once (the GIL is released while it runs), samples each slot's
next token (sampling.py), and puts the token on the request's queue.
Request threads turn tokens into text; the scheduler does only per-token bookkeeping.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import llama_cpp as L
import numpy as np

from modelyard.server.inference import testhooks
from modelyard.server.inference.events import Ended, Failed, Started, Token
from modelyard.server.inference.llama.adapters import AdapterError, Adapters, batch_set
from modelyard.server.inference.llama.model import LlamaModel
from modelyard.server.inference.llama.context_thread import ContextThread
from modelyard.server.inference.llama.kvcache import head_sizes, kv_cache_config
from modelyard.server.inference.llama.sampling import SamplingParams, build_sampler
from modelyard.server.inference.llama.slots import choose_slot, plan_batch

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096  # per slot, when the model's metadata names no initContextSize
# Slots beyond `parallel` that only priority requests (priority > 0: Silicon Studio's
# predict, an editor's inline suggestion) may take: when long chats hold every ordinary
# slot, a priority request still starts at the next step instead of waiting for a chat to
# end, and the steps decode only it until it ends (_running).
PRIORITY_SLOTS = 1
BATCH_SIZE = 2048
UBATCH_SIZE = 512


@dataclass
class GenRequest:
    """What the scheduler needs for one generation. `out` receives its events
    (inference/events.py): Started, Tokens, then exactly one of Ended or Failed.

    With images (a vlm), `prompt` holds a key where each image position goes, and
    `media` the images' spans and embeddings (projector.ImageSpan), in prompt order.
    """

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    logprobs: int | None = None  # None: none; k: the chosen token's and the top k
    media: tuple = ()
    priority: int = 0  # higher is admitted first, and may take a priority slot
    adapters: tuple = ()  # LoRA adapters, as adapters.normal() spells the set
    cancel: threading.Event = field(default_factory=threading.Event)
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose K/V are in the cache
    last_used: float = 0.0
    req: GenRequest | None = None
    sampler: object = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    last_token: int = -1
    n_generated: int = 0
    out_index: int = -1  # this slot's output row in the last batch
    reserved: bool = False  # a priority slot: only priority requests take it
    adapters: tuple = ()  # the adapter set the cached tokens were decoded with


class _Batch:
    """A llama_batch whose arrays are numpy buffers we own, so filling it is vectorised."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        base = self.seq.ctypes.data
        self.seq_ptrs = (ctypes.POINTER(L.llama_seq_id) * capacity)(
            *[ctypes.cast(base + 4 * i, ctypes.POINTER(L.llama_seq_id)) for i in range(capacity)])
        self.c = L.llama_batch()
        self.c.token = self.token.ctypes.data_as(ctypes.POINTER(L.llama_token))
        self.c.embd = None
        self.c.pos = self.pos.ctypes.data_as(ctypes.POINTER(L.llama_pos))
        self.c.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.c.seq_id = ctypes.cast(self.seq_ptrs, ctypes.POINTER(ctypes.POINTER(L.llama_seq_id)))
        self.c.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, tokens, start_pos: int, seq: int, want_last: bool) -> int:
        """Append tokens of one sequence; returns the row of the last one."""
        k = len(tokens)
        a, b = self.n, self.n + k
        self.token[a:b] = tokens
        self.pos[a:b] = np.arange(start_pos, start_pos + k, dtype=np.int32)
        self.seq[a:b] = seq
        self.logits[a:b] = 0
        if want_last:
            self.logits[b - 1] = 1
        self.n = b
        self.c.n_tokens = b
        return b - 1


class Scheduler(ContextThread):
    """Owns one llama.cpp context for a model. Thread-safe `submit`; everything else is
    done by its scheduler thread."""

    def __init__(self, model: LlamaModel, parallel: int = 4, threads: int = 1,
                 context_per_slot: int | None = None, name: str = "",
                 projector=None, kv_cache_type: str | None = None):
        self.model = model
        self.projector = projector  # a vlm's projector.Projector: decodes image embeddings
        self.name = name or model.path.stem
        self.parallel = max(1, parallel)
        n_seqs = self.parallel + PRIORITY_SLOTS
        per_slot = context_per_slot or min(model.n_ctx_train or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        params = L.llama_context_default_params()
        # Each slot gets a whole context of its own size (a split, not unified, cache),
        # so one long conversation can never starve the others of room.
        params.n_ctx = per_slot * n_seqs
        params.n_seq_max = n_seqs
        params.kv_unified = False
        params.n_batch = min(BATCH_SIZE, params.n_ctx)
        params.n_ubatch = min(UBATCH_SIZE, params.n_batch)
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        kv = kv_cache_config(kv_cache_type, *head_sizes(model.meta, model.n_embd, L.llama_model_n_head(model.ptr)))
        params.type_k, params.type_v = kv.type_k, kv.type_v
        if kv.flash_attn:
            params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.kv_cache_type = kv.name
        self.ctx = L.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise MemoryError(f"llama.cpp could not create a context of {params.n_ctx} tokens "
                              f"with a {kv.name} KV cache")
        self.mem = L.llama_get_memory(self.ctx)
        self.n_ctx_slot = L.llama_n_ctx_seq(self.ctx)
        self.batch = _Batch(params.n_batch)
        # A step carries one micro-batch of tokens, not a whole batch. llama.cpp evaluates a
        # batch as micro-batches one after another and samples only after the last, so a
        # 2048-token step made the streams already generating, and every prompt that ended in
        # its first micro-batches, wait for all four (a second and more on a CPU core). The
        # work is the same either way; in one-micro-batch steps a prompt that ends early starts
        # generating at once, and the other streams get a token every micro-batch. Measured
        # on 16 conversations starting at once on 3 pods: their first tokens 20% sooner
        # (docs/benchmarks.md, "Router", session 10). Images still decode a batch at a time.
        self.step_tokens = params.n_ubatch
        # Measured on the owner thread, as every decode must be: llama.cpp's CPU backend
        # (OpenMP) keeps a team of worker threads for each thread that calls llama_decode,
        # and a decode here, on the loading thread, left a second team that cost a fifth of
        # the decode rate from then on (docs/benchmarks.md).
        self.kv_bytes_per_token: int | None = None
        self._measured = threading.Event()
        self.slots = [_Slot(seq=i, reserved=i >= self.parallel) for i in range(n_seqs)]
        self.adapters = Adapters(model)
        # Tokens put through llama_decode, by phase: what a cancelled request still costs
        # shows here, not in what its client received.
        self.decoded = {"prompt": 0, "generate": 0}
        self._waiting: collections.deque[GenRequest] = collections.deque()
        self._start_owner(f"engine-{self.name}")
        self._measured.wait()

    def _on_start(self) -> None:
        try:
            self.kv_bytes_per_token = self._measure_kv_bytes()
        finally:
            self._measured.set()

    def _measure_kv_bytes(self) -> int | None:
        """What one token costs in the KV cache, in llama.cpp's own accounting: the growth of
        a sequence's saved state from one cached token to two (every layer's K and V rows in
        the cache's type, and the cell's position). Run once, on the owner thread before its
        loop, on slot 0, which it leaves empty. None when the model cannot be probed so."""
        if self.model.has_encoder:  # its decoder runs only after an encode
            return None
        try:
            sizes = []
            for pos in (0, 1):
                self.batch.clear()
                self.batch.add([max(self.model.bos, 0)], pos, 0, True)
                if L.llama_decode(self.ctx, self.batch.c) != 0:
                    return None
                sizes.append(L.llama_state_seq_get_size(self.ctx, 0))
            return sizes[1] - sizes[0]
        finally:
            L.llama_memory_seq_rm(self.mem, 0, -1, -1)
            self.batch.clear()

    # ---- the request side ------------------------------------------------------------

    def submit(self, req: GenRequest) -> GenRequest:
        self._enqueue(self._waiting, req)
        return req

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return sum(1 for s in self.slots if s.req is not None)

    @property
    def kv_cells(self) -> int:
        """The context's KV cells, all slots' (llama.cpp's cache is cells: one a token)."""
        return self.n_ctx_slot * len(self.slots)

    @property
    def slot_count(self) -> int:
        return len(self.slots)

    @property
    def kv_cells_used(self) -> int:
        """Cells holding the decoded tokens of running requests. An idle slot's cached prefix
        is not counted: any request may take that slot and overwrite it (vLLM counts its
        cached blocks of finished requests as free too)."""
        return sum(len(s.cached) for s in self.slots if s.req is not None)

    def adapter_files(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(adapter files of running requests, of waiting ones), sorted: what the endpoint
        picker's LoRA affinity reads."""
        running = {p for s in self.slots if s.req is not None for p, _ in s.req.adapters}
        waiting = {p for r in list(self._waiting) for p, _ in r.adapters}
        return tuple(sorted(running)), tuple(sorted(waiting))

    def counters(self) -> tuple:
        """What the runner sends the server after each step (remote.py's Runner.counters)."""
        return (self.queue_depth, self.active, self.decoded["prompt"], self.decoded["generate"],
                self.kv_cells_used, self.adapter_files())

    def _next_waiting(self) -> tuple[GenRequest | None, list]:
        """The request to admit next (the highest priority, then the oldest) and the free
        slots it may take; (None, []) when it must wait. Called with the lock held."""
        req = max(self._waiting, key=lambda r: r.priority)  # max keeps the first of equals
        # A cache decoded with other adapters is no prefix of this request's.
        free = [(s.seq, s.cached if s.adapters == req.adapters else (), s.last_used) for s in self.slots
                if s.req is None and (req.priority > 0 or not s.reserved)]
        return (req, free) if free else (None, [])

    # ---- the scheduler thread --------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._waiting) or any(s.req is not None for s in self.slots)

    def _work(self) -> None:
        """One scheduler step: admit, decode one batch, sample."""
        self._admit()
        self._reap_cancelled()
        running = self._running()
        generating = [s for s in running if not s.pending]
        prompting = sorted((s for s in running if s.pending), key=lambda s: s.req.submitted)
        if any(s.req.media for s in prompting):
            prompting = self._decode_images(prompting)
        plan = plan_batch([s.seq for s in generating],
                          [(s.seq, self._text_run(s)) for s in prompting], self.step_tokens)
        if not plan:
            return
        try:  # every slot of the plan has the same set (_running)
            self.adapters.apply(self.ctx, self.slots[plan[0][0]].req.adapters)
        except AdapterError as exc:
            self._fail_batch({seq: [] for seq, _ in plan}, str(exc))
            return
        self.batch.clear()
        decoded: dict[int, list[int]] = {}
        n_prompt = n_generate = 0
        for seq, n in plan:
            slot = self.slots[seq]
            if slot.pending:
                chunk = slot.pending[:n]
                slot.pending = slot.pending[n:]
                last = not slot.pending
                n_prompt += len(chunk)
            else:
                chunk, last = [slot.last_token], True
                n_generate += 1
            row = self.batch.add(chunk, len(slot.cached), seq, last)
            slot.out_index = row if last else -1
            decoded[seq] = chunk
        rc = testhooks.decode_result(L.llama_decode(self.ctx, self.batch.c))
        if rc != 0:
            self._fail_batch(decoded, f"llama_decode failed with code {rc}")
            return
        self.decoded["prompt"] += n_prompt
        self.decoded["generate"] += n_generate
        for seq, chunk in decoded.items():
            slot = self.slots[seq]
            slot.cached.extend(chunk)
            if slot.out_index >= 0:
                self._sample(slot)

    def _running(self) -> list[_Slot]:
        """The slots this step decodes: while a priority request runs, only those of the
        highest priority, so its steps cost what they cost alone (the others pause, their
        caches kept, for the few steps an inline suggestion takes). Of those, the ones with
        the adapter set of the longest waiting: llama.cpp applies one set to a whole decode."""
        running = [s for s in self.slots if s.req is not None]
        top = max((s.req.priority for s in running), default=0)
        if top > 0:
            running = [s for s in running if s.req.priority == top]
        if any(s.req.adapters for s in running):
            chosen = batch_set([(s.req.submitted, s.req.adapters) for s in running])
            running = [s for s in running if s.req.adapters == chosen]
        return running

    # ---- images (vlm) ----------------------------------------------------------------
    #
    # A llama_batch carries token ids or embeddings, not both, so an image is decoded on
    # its own, between the steps' batches: at most one per step, the oldest prompt's,
    # so that streams already generating wait for one image at a time.

    def _decode_images(self, prompting: list[_Slot]) -> list[_Slot]:
        """Decode one waiting image; the prompting slots whose next piece is text."""
        text, decoded = [], False
        for slot in prompting:
            if not slot.req.media or isinstance(slot.pending[0], int):
                text.append(slot)
            elif not decoded:
                decoded = True
                if self._decode_image(slot) and isinstance(slot.pending[0], int):
                    text.append(slot)
        return text

    def _decode_image(self, slot: _Slot) -> bool:
        pos = len(slot.cached)  # the prompt's index of the next position to decode
        span = next((m for m in slot.req.media if m.start == pos), None)
        if span is None or self.projector is None:
            self._fail_batch({slot.seq: []}, "the prompt's image positions are inconsistent")
            return False
        rc = self.projector.decode(self.ctx, span, pos, slot.seq, self.batch.capacity)
        if rc != 0:
            self._fail_batch({slot.seq: []}, f"decoding an image failed with code {rc}")
            return False
        slot.cached.extend(slot.pending[:span.n_tokens])
        del slot.pending[:span.n_tokens]
        if not slot.pending:  # the projector refuses such prompts: sampling needs logits
            self._fail_batch({slot.seq: []}, "the prompt ends with an image")
            return False
        return True

    @staticmethod
    def _text_run(slot: _Slot) -> int:
        """How many prompt tokens the slot can put in a batch: up to its next image."""
        if not slot.req.media:
            return len(slot.pending)
        pos = len(slot.cached)
        start = min((m.start for m in slot.req.media if m.start >= pos), default=None)
        return len(slot.pending) if start is None else start - pos

    def _sample(self, slot: _Slot) -> None:
        req = slot.req
        token = slot.sampler.sample(self.ctx, slot.out_index)
        if self.model.is_eog(token):
            self._finish(slot, "stop")
            return
        lp = self._logprobs(slot.out_index, token, req.logprobs) if req.logprobs is not None else None
        req.out.put(Token(token, lp))
        slot.n_generated += 1
        slot.last_token = token
        if slot.n_generated >= req.max_tokens:
            self._finish(slot, "length")

    def _logprobs(self, row: int, token: int, top: int):
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, row), shape=(self.model.n_vocab,))
        m = logits.max()
        logz = m + np.log(np.exp(logits - m).sum())
        chosen = float(logits[token] - logz)
        if top <= 0:
            return chosen, []
        idx = np.argpartition(-logits, top)[:top]
        idx = idx[np.argsort(-logits[idx])]
        return chosen, [(int(i), float(logits[i] - logz)) for i in idx]

    def _admit(self) -> None:
        while True:
            with self._cv:
                if not self._waiting:
                    break
                # A request that cannot start blocks those behind it: they have no more
                # slots to choose from than it has.
                req, free = self._next_waiting()
                if req is None:
                    break
                self._waiting.remove(req)
            if req.cancel.is_set():
                req.out.put(Ended("cancelled"))
                continue
            try:
                for path, _ in req.adapters:
                    self.adapters.load(path)
            except AdapterError as exc:
                req.out.put(Failed(str(exc)))
                continue
            seq, keep = choose_slot(free, req.prompt)
            # An image is decoded whole: a prefix that ends inside one keeps none of it.
            keep = next((m.start for m in req.media if m.start < keep < m.end), keep)
            slot = self.slots[seq]
            try:
                slot.sampler = build_sampler(self.model.vocab, self.model.n_vocab, req.params)
            except Exception as exc:  # one bad request must not take the engine down
                log.exception("engine %s: cannot build a sampler", self.name)
                req.out.put(Failed(f"cannot set up sampling: {exc}"))
                continue
            L.llama_memory_seq_rm(self.mem, seq, keep, -1)
            del slot.cached[keep:]
            slot.adapters = req.adapters
            slot.req = req
            slot.pending = list(req.prompt[keep:])
            slot.n_generated = 0
            slot.last_token = -1
            req.out.put(Started(keep))

    def _reap_cancelled(self) -> None:
        for slot in self.slots:
            if slot.req is not None and slot.req.cancel.is_set():
                self._finish(slot, "cancelled")

    def _finish(self, slot: _Slot, reason: str) -> None:
        slot.req.out.put(Ended(reason, len(slot.cached)))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        if slot.pending:
            # The prompt was cut short: the cache holds only what was decoded.
            slot.pending = []
        if slot.sampler is not None:
            slot.sampler.free()
            slot.sampler = None
        slot.req = None
        slot.last_used = time.monotonic()

    def _fail_batch(self, decoded: dict[int, list[int]], message: str) -> None:
        log.error("engine %s: %s", self.name, message)
        for seq in decoded:
            slot = self.slots[seq]
            L.llama_memory_seq_rm(self.mem, seq, -1, -1)
            slot.cached = []
            slot.req.out.put(Failed(message))
            self._release(slot)

    def _shutdown(self) -> None:
        with self._cv:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for req in waiting:
            req.out.put(Failed(f"model '{self.name}' was unloaded"))
        for slot in self.slots:
            if slot.req is not None:
                slot.req.out.put(Failed(f"model '{self.name}' was unloaded"))
                self._release(slot)
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
