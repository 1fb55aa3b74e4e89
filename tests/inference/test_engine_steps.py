"""The engine's step is one micro-batch (server/inference/llama/scheduler.py): a long prompt that
arrives while another stream generates is evaluated over several steps, and the generating
stream gets a token in each of them instead of waiting for the whole prompt.

Both requests put their events on one queue, so the order the engine's thread put them in is
the order read here: the tokens between the long request's Started and its Ended are the
generating stream's, one a step, and its own first token."""
from __future__ import annotations

import math
import queue

import numpy as np
import pytest

import modelgen
from modelyard.server.inference.events import Ended, Started, Token
from modelyard.server.inference.llama.model import LlamaModel
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.llama.scheduler import GenRequest, Scheduler

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SHAPE = modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=2, n_head_kv=1, n_ff=128, n_ctx_train=4096)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("steps")
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", n_base=1000, extra=SPECIALS)
    m = LlamaModel(modelgen.make_llama_gguf(d / "m.gguf", vocab=vocab, shape=SHAPE))
    yield m
    m.close()


def test_a_long_prompt_takes_a_micro_batch_a_step_while_a_stream_generates(model):
    engine = Scheduler(model, parallel=2, threads=1, context_per_slot=4096)
    try:
        events: queue.SimpleQueue = queue.SimpleQueue()
        # The stream that generates: its end-of-generation tokens barred, so it outlives the prompt.
        barred = {t: -1e9 for t in range(model.n_vocab - len(SPECIALS), model.n_vocab)}
        generating = GenRequest([5, 6, 7], SamplingParams(temperature=0.0, logit_bias=barred), max_tokens=1000,
                                out=events)
        engine.submit(generating)
        assert isinstance(events.get(timeout=60), Started)
        assert isinstance(events.get(timeout=60), Token)
        length = 3 * engine.step_tokens + 100
        prompt = np.random.default_rng(0).integers(3, 1000, length).tolist()
        engine.submit(GenRequest(prompt, SamplingParams(temperature=0.0), max_tokens=1, out=events))
        while not isinstance(event := events.get(timeout=60), Started):
            assert isinstance(event, Token), event  # the stream's, before the prompt was admitted
        assert event.cached == 0
        tokens = 0
        while not isinstance(event := events.get(timeout=60), Ended):
            assert isinstance(event, Token), event
            tokens += 1
        assert event.reason == "length"
        # Each step: the stream's one token, and step_tokens - 1 of the prompt's.
        steps = math.ceil(length / (engine.step_tokens - 1))
        assert engine.step_tokens == 512 and steps == 4
        assert tokens == steps + 1, (tokens, steps)
    finally:
        engine.close()
