"""The embedding engine: one llama.cpp context with pooling, one worker thread.

Inputs from every waiting request are packed together, many sequences per batch (one
sequence id each), so 256 sentences cost a handful of decodes rather than 256.
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

import llama_cpp as L
import numpy as np

from modelyard.server.inference.llama.scheduler import _Batch
from modelyard.server.inference.llama.context_thread import ContextThread
from modelyard.server.inference.llama.model import LlamaModel

log = logging.getLogger(__name__)

MAX_SEQS = 64
# Encoders attend across the whole micro-batch (masked), so the attention cost per token
# grows with the batch: 512 keeps it small next to the feed-forward work.
BATCH_TOKENS = 512


@dataclass
class EmbedJob:
    inputs: list[list[int]]
    result: np.ndarray | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def pack(lengths: list[int], max_tokens: int, max_seqs: int) -> list[list[int]]:
    """Group input indices into batches within both limits, in order."""
    groups, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and (used + n > max_tokens or len(cur) >= max_seqs):
            groups.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        groups.append(cur)
    return groups


class Embedder(ContextThread):
    def __init__(self, model: LlamaModel, threads: int = 1, name: str = "", context: int | None = None):
        self.model = model
        self.name = name or model.path.stem
        # Encoder models attend over the whole sequence, so a sequence must fit in one
        # micro-batch: n_batch == n_ubatch, and no input longer than the training context.
        self.max_input = min(context or model.n_ctx_train or 512, model.n_ctx_train or 512)
        self.batch_tokens = max(BATCH_TOKENS, self.max_input)
        self.ctx = self._context(threads, L.LLAMA_POOLING_TYPE_UNSPECIFIED)
        if L.llama_pooling_type(self.ctx) == L.LLAMA_POOLING_TYPE_NONE:
            L.llama_free(self.ctx)  # a model without a pooling head: average its tokens
            self.ctx = self._context(threads, L.LLAMA_POOLING_TYPE_MEAN)
        self.mem = L.llama_get_memory(self.ctx)
        self.n_embd = L.llama_model_n_embd_out(model.ptr) or model.n_embd
        self.batch = _Batch(self.batch_tokens)
        self._jobs: collections.deque[EmbedJob] = collections.deque()
        self._start_owner(f"embed-{self.name}")

    def _context(self, threads: int, pooling: int):
        p = L.llama_context_default_params()
        p.n_ctx = self.batch_tokens
        p.n_batch = p.n_ubatch = self.batch_tokens
        p.n_seq_max = MAX_SEQS
        # One cache for all sequences: a decoder's KV cache split per sequence gives each only
        # n_ctx / MAX_SEQS cells, and an input longer than that failed llama_decode (returned 1).
        # Every decode clears it, so a batch that fits n_ctx fits the cache, however it is split.
        p.kv_unified = True
        p.embeddings = True
        p.pooling_type = pooling
        p.n_threads = p.n_threads_batch = threads
        p.no_perf = True
        ctx = L.llama_init_from_model(self.model.ptr, p)
        if not ctx:
            raise MemoryError("llama.cpp could not create an embedding context")
        return ctx

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=True)

    def embed(self, inputs: list[list[int]]) -> np.ndarray:
        """Unit-length embeddings, one row per input. Thread-safe."""
        job = EmbedJob(inputs)
        self._enqueue(self._jobs, job)
        job.done.wait()
        if job.error:
            raise RuntimeError(job.error)
        return job.result

    def _has_work(self) -> bool:
        return bool(self._jobs)

    def _work(self) -> None:
        """Embed every input of every waiting request, packed into as few batches as fit."""
        with self._cv:
            jobs = list(self._jobs)
            self._jobs.clear()
        self._embed(jobs)

    def _shutdown(self) -> None:
        with self._cv:
            self._closing = True
            left = list(self._jobs)
            self._jobs.clear()
        for job in left:
            job.error = f"model '{self.name}' was unloaded"
            job.done.set()
        L.llama_free(self.ctx)
        self.ctx = None

    def _embed(self, jobs: list[EmbedJob]) -> None:
        seqs = [(j, k) for j in jobs for k in range(len(j.inputs))]
        for j in jobs:
            j.result = np.zeros((len(j.inputs), self.n_embd), np.float32)
        try:
            lengths = [len(j.inputs[k]) for j, k in seqs]
            for group in pack(lengths, self.batch_tokens, MAX_SEQS):
                self._decode([seqs[i] for i in group])
        except Exception as exc:
            log.exception("engine %s: embedding failed", self.name)
            for j in jobs:
                j.error = f"embedding failed: {exc}"
        for j in jobs:
            j.done.set()

    def _decode(self, items) -> None:
        if self.mem:
            L.llama_memory_clear(self.mem, True)
        self.batch.clear()
        for seq, (job, k) in enumerate(items):
            tokens = job.inputs[k]
            self.batch.add(tokens, 0, seq, True)
            self.batch.logits[self.batch.n - len(tokens):self.batch.n] = 1
        rc = L.llama_decode(self.ctx, self.batch.c)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        for seq, (job, k) in enumerate(items):
            ptr = L.llama_get_embeddings_seq(self.ctx, seq)
            v = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32)
            norm = float(np.linalg.norm(v))
            job.result[k] = v / norm if norm > 0 else v
