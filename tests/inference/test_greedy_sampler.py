"""Plain greedy decoding picks with numpy (sampling.GreedySampler) instead of llama.cpp's
sampler chain, to keep a vocabulary-sized copy off the path between two decodes. It must
pick exactly what the chain picks (llama.cpp's logit-bias sampler, then its greedy one) on
the same logits: with no bias, a bias that bans the top token, one that lifts another to
the top, biases that make exact float32 ties (both keep the lowest token id), and ids
outside the vocabulary (ignored by both: a bad id must not take the engine down).
"""
from __future__ import annotations

import llama_cpp as L
import numpy as np
import pytest

from modelyard.server.inference.llama.model import LlamaModel
from modelyard.server.inference.llama.sampling import (ChainSampler, GreedySampler, SamplingParams,
                                                       build_chain, build_sampler)

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "1, 2, 3, 4,"]


@pytest.fixture(scope="module")
def rows(model_files):
    """A context holding the last-token logits of several prompts (one row each)."""
    model = LlamaModel(model_files["chat"])
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_seq_max = 256, 256, len(PROMPTS)
    ctx = L.llama_init_from_model(model.ptr, params)
    batch = L.llama_batch_init(256, 0, len(PROMPTS))
    n = 0
    out_rows = []
    for seq, text in enumerate(PROMPTS):
        tokens = model.tokenize(text, add_special=True)
        for pos, tok in enumerate(tokens):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = tok, pos, 1
            batch.seq_id[n][0] = seq
            batch.logits[n] = pos == len(tokens) - 1
            n += 1
        out_rows.append(n - 1)
    batch.n_tokens = n
    assert L.llama_decode(ctx, batch) == 0
    yield model, ctx, out_rows
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    model.close()


def _logits(model, ctx, row) -> np.ndarray:
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, row), shape=(model.n_vocab,)).copy()


def _biases(logits: np.ndarray) -> list[dict[int, float]]:
    order = np.argsort(-logits, kind="stable")
    top, second, low = int(order[0]), int(order[1]), int(order[-1])
    lower, higher = min(top, second), max(top, second)
    tie_up = float(np.float32(logits[top]) - np.float32(logits[lower if lower != top else higher]))
    return [
        {},
        {top: -100.0},  # banned: the runner-up wins
        {low: 1000.0},  # the least likely token lifted to the top
        {top: -np.inf, second: -np.inf},
        # the other of the two raised to the top's value: an exact tie in float32 (or as
        # near as float32 gets); either way both samplers see the same sums
        {lower if lower != top else higher: tie_up},
        {t: -5.0 for t in order[:50].tolist()},
        # ids beyond the vocabulary (another model's) and negative ones are ignored
        {len(logits) + 100_000: 50.0, -3: 50.0, second: 1000.0},
    ]


def test_greedy_sampler_picks_what_the_chain_picks(rows):
    model, ctx, out_rows = rows
    checked = 0
    for row in out_rows:
        for bias in _biases(_logits(model, ctx, row)):
            params = SamplingParams(temperature=0, logit_bias=bias)
            fast = GreedySampler(model.n_vocab, bias)
            chain = ChainSampler(build_chain(model.vocab, model.n_vocab, params))
            try:
                assert fast.sample(ctx, row) == chain.sample(ctx, row), (row, bias)
            finally:
                chain.free()
            checked += 1
    assert checked == len(PROMPTS) * 7


def test_the_logits_are_left_as_they_were(rows):
    """Logprobs read the raw logits after sampling: the bias must not be written into them."""
    model, ctx, out_rows = rows
    before = _logits(model, ctx, out_rows[0])
    top = int(before.argmax())
    assert GreedySampler(model.n_vocab, {top: -100.0}).sample(ctx, out_rows[0]) != top
    assert np.array_equal(_logits(model, ctx, out_rows[0]), before)


@pytest.mark.parametrize("params, fast", [
    (SamplingParams(temperature=0), True),
    (SamplingParams(temperature=0, logit_bias={5: 2.0}), True),
    (SamplingParams(temperature=0, repeat_penalty=1.1), False),
    (SamplingParams(temperature=0, presence_penalty=0.5), False),
    (SamplingParams(temperature=0, grammar='root ::= "a"'), False),
    (SamplingParams(temperature=0.7), False),
])
def test_only_plain_greedy_takes_the_numpy_path(rows, params, fast):
    model = rows[0]
    sampler = build_sampler(model.vocab, model.n_vocab, params)
    try:
        assert isinstance(sampler, GreedySampler) is fast
    finally:
        sampler.free()
