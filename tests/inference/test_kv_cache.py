"""KV-cache quantization in the engine, measured with llama.cpp's own numbers.

The model has SmolLM2-135M's layer shape (width 576, 9 heads, 3 KV heads of 64, feed-forward
1536; 4 of its 30 layers, untied output) and a cut of gpt-2's real vocabulary: a head size
of 64 holds q8_0's and q4_0's 32-value blocks whole, as the heads of real models do.

Memory: the bytes of one sequence's KV cache are llama.cpp's own state size for it
(llama_state_seq_get_size: every layer's K and V rows in the cache's type, and each cell's
position), after the engine evaluated the same 300-token prompt in each cache type.
Per token, f16 is 4 layers x (K + V) x 192 values x 2 bytes + 12 bytes of cell = 3084;
q8_0 stores 34 bytes per 32 values (1644, 0.533x), q4_0 18 (876, 0.284x).

Coherence: the weights are random, so the text means nothing, and a free-running greedy
chain amplifies any change: one near-tie (top-2 logits 0.0003 apart happen in 64 steps)
sends it elsewhere for good, so "the first 64 tokens are equal" measures luck. The
measure here is teacher-forced: f16 writes 64 tokens greedily for each of 6 prompts; each
cache type then reads prompt + those tokens, and we count the positions where its top-1
token is f16's. Measured: q8_0 383/384 (0.997), q4_0 338/384 (0.880); f16 itself, read
this way, 383/384 (batched and one-token evaluation round differently at that near-tie).
So q8_0 is asked for >= 0.97 (as good as f16's own noise, with room for a few
near-ties), and q4_0 to score below q8_0, which shows the measure sees quantization.
"""
from __future__ import annotations

import llama_cpp as L
import numpy as np
import pytest

import modelgen
from modelyard.server.inference.events import FINAL, Ended
from modelyard.server.inference.llama.kvcache import KvCacheError, head_sizes, kv_cache_config
from modelyard.server.inference.llama.model import LlamaModel
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.llama.scheduler import GenRequest, Scheduler

SHAPE = modelgen.LlamaShape(n_embd=576, n_layer=4, n_head=9, n_head_kv=3, n_ff=1536,
                            n_ctx_train=8192, rope_theta=100000.0)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PROMPTS = ["Once upon a time there was a little fox who lived in the forest.",
           "The capital of France is Paris, and the capital of Germany is",
           "def fibonacci(n):\n    if n < 2:\n        return n\n",
           "List three colours: red, green,",
           "In 1969 the first people walked on the moon. They were",
           "Water boils at one hundred degrees Celsius at sea level because"]
N_TOKENS = 64


def make_model_file(d):
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", n_base=1000, extra=SPECIALS)
    return modelgen.make_llama_gguf(d / "smol-layers.gguf", vocab=vocab, shape=SHAPE, qtype="F16")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = LlamaModel(make_model_file(tmp_path_factory.mktemp("kvq")))
    yield m
    m.close()


def _seq_state_bytes(model, kv_type: str, prompt: list[int]) -> tuple[int, int]:
    """(state bytes of the prompt's sequence, bytes per token measured at load) in an engine."""
    engine = Scheduler(model, parallel=1, threads=2, context_per_slot=512, kv_cache_type=kv_type)
    try:
        assert engine.kv_cache_type == kv_type
        req = engine.submit(GenRequest(prompt, SamplingParams(temperature=0.0), max_tokens=1))
        while not isinstance(event := req.out.get(timeout=60), FINAL):
            pass
        assert isinstance(event, Ended), event
        # the engine is idle (its thread waits for work): reading its context is safe
        return L.llama_state_seq_get_size(engine.ctx, 0), engine.kv_bytes_per_token
    finally:
        engine.close()


def test_kv_cache_bytes_shrink_as_the_type_says(model):
    prompt = model.tokenize(" ".join(PROMPTS) * 5, add_special=True)[:300]
    assert len(prompt) == 300
    sizes = {t: _seq_state_bytes(model, t, prompt) for t in ("f16", "q8_0", "q4_0")}
    f16, f16_per_token = sizes["f16"]
    assert f16_per_token == 3084
    q8 = sizes["q8_0"][0] / f16
    q4 = sizes["q4_0"][0] / f16
    assert q8 <= 0.55 and q4 <= 0.30, (q8, q4)
    # no lower than the block formats allow: the engine really stored those types
    assert q8 >= 34 / 64 - 0.005 and q4 >= 18 / 64 - 0.005, (q8, q4)
    assert sizes["q8_0"][1] == 1644 and sizes["q4_0"][1] == 876


def _context(model, kv_type: str, n_ctx: int = 512):
    kv = kv_cache_config(kv_type, *head_sizes(model.meta, model.n_embd, L.llama_model_n_head(model.ptr)))
    p = L.llama_context_default_params()
    p.n_ctx = p.n_batch = p.n_ubatch = n_ctx
    p.n_threads = p.n_threads_batch = 2
    p.type_k, p.type_v = kv.type_k, kv.type_v
    if kv.flash_attn:
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
    ctx = L.llama_init_from_model(model.ptr, p)
    assert ctx
    return ctx


def _decode(ctx, tokens: list[int], start: int, outputs: bool) -> None:
    batch = L.llama_batch_init(len(tokens), 0, 1)
    try:
        for i, t in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = t, start + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = outputs or i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        assert L.llama_decode(ctx, batch) == 0
    finally:
        L.llama_batch_free(batch)


def _top1(ctx, model, row: int) -> int:
    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, row), shape=(model.n_vocab,))
    return int(logits.argmax())


def _greedy_f16(model, prompt: list[int]) -> list[int]:
    ctx = _context(model, "f16")
    try:
        _decode(ctx, prompt, 0, outputs=False)
        out = []
        for _ in range(N_TOKENS):
            out.append(_top1(ctx, model, -1))
            _decode(ctx, out[-1:], len(prompt) + len(out) - 1, outputs=False)
        return out
    finally:
        L.llama_free(ctx)


def _forced_agreement(model, prompt: list[int], reference: list[int], kv_type: str) -> int:
    ctx = _context(model, kv_type)
    try:
        _decode(ctx, prompt + reference[:-1], 0, outputs=True)
        rows = range(len(prompt) - 1, len(prompt) - 1 + len(reference))
        return sum(_top1(ctx, model, row) == ref for row, ref in zip(rows, reference))
    finally:
        L.llama_free(ctx)


def test_greedy_output_at_q8_0_stays_with_f16(model):
    agree = {"q8_0": 0, "q4_0": 0}
    distinct = set()
    for text in PROMPTS:
        prompt = model.tokenize(text, add_special=True)
        reference = _greedy_f16(model, prompt)
        distinct.update(reference)
        for kv_type in agree:
            agree[kv_type] += _forced_agreement(model, prompt, reference, kv_type)
    total = N_TOKENS * len(PROMPTS)
    assert len(distinct) > 100  # the model does not just repeat a token: agreement means something
    assert agree["q8_0"] / total >= 0.97, agree
    assert agree["q4_0"] < agree["q8_0"], agree


def test_a_head_size_the_blocks_do_not_divide_is_refused_with_the_reason():
    with pytest.raises(KvCacheError, match="head size is 16: use kvCacheType f16"):
        kv_cache_config("q8_0", 16, 16)
    assert kv_cache_config("f16", 16, 16).flash_attn is None
    assert kv_cache_config(None, 64, 64).name == "f16"
    q4 = kv_cache_config("q4_0", 64, 64)
    assert (q4.type_k, q4.type_v, q4.flash_attn) == (L.GGML_TYPE_Q4_0, L.GGML_TYPE_Q4_0, True)


def test_head_sizes_from_the_metadata():
    assert head_sizes({}, 576, 9) == (64, 64)
    meta = {"general.architecture": "qwen3", "qwen3.attention.key_length": "128",
            "qwen3.attention.value_length": "128"}
    assert head_sizes(meta, 1024, 16) == (128, 128)

