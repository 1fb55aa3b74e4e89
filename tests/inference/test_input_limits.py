"""Input limits on the real server (issue 19, items 2, 6, 8, 9): a template, a prompt or a
context size that would exhaust the server is refused early with a 4xx that says why, and
ordinary embedding requests never get a 5xx.

One server of this module's own, with its own store (the models here must not show in the
other modules' listings); models are uploaded through the registry API.
"""
from __future__ import annotations

import time

import httpx
import pytest

import modelgen
from conftest import AUTH, CATALOGUE, KEY, provision
from support.servers import Server

BIG_KV = modelgen.LlamaShape(n_layer=64, n_head_kv=4, n_ff=64, n_ctx_train=1 << 20, tied=True)


@pytest.fixture(scope="module")
def srv(tmp_path_factory, model_files):
    root = tmp_path_factory.mktemp("limits")
    d = tmp_path_factory.mktemp("limits-models")
    big_kv = modelgen.make_llama_gguf(d / "big-kv.gguf", vocab="phi-3", shape=BIG_KV, chat_template=None)
    server = Server(root / "store", api_key=KEY, args=("--threads", "2", "--parallel", "4"),
                    log_path=root / "server.log").start()
    catalogue = {**{k: CATALOGUE[k] for k in ("plain", "embed")},
                 "dec-embed": ("embed", "plain", {}),  # a decoder (llama) as an embedder
                 "ctx-wrap": ("llm", "plain", {"gguf": {"initContextSize": 1 << 40}}),
                 "big-kv": ("llm", "big-kv", {"gguf": {"initContextSize": 1 << 20}})}
    provision(server, {**model_files, "big-kv": big_kv}, catalogue=catalogue)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def c(srv):
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=120) as client:
        yield client


def _timed(c, path: str, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = c.post(path, json=body)
    return r, time.monotonic() - started


# ---- templates (item 2) ---------------------------------------------------------------------


def test_a_template_that_repeats_the_prompt_stops_at_the_context(c):
    # 55 KB of template and a 5 KB prompt render to 27 MB: rendering stops near the context's
    # worth of bytes and says so.
    body = {"model": "plain", "prompt": "word " * 1000, "template": "{{.Prompt}}" * 5000, "stream": False}
    r, took = _timed(c, "/api/generate", body)
    assert r.status_code == 400, r.text
    assert "more than the model's context can hold" in r.json()["error"]
    assert took < 10, took


def test_nesting_and_size_of_a_template_are_capped(c):
    nested = "{{ if .Prompt }}" * 100 + "x" + "{{ end }}" * 100
    r = c.post("/api/generate", json={"model": "plain", "prompt": "hi", "template": nested, "stream": False})
    assert r.status_code == 400 and "nests more than 64 blocks deep" in r.json()["error"], r.text
    huge = "{{if .Prompt}}" * 20000 + "x" + "{{end}}" * 20000  # 420 KB: 50 s of CPU before
    r, took = _timed(c, "/api/generate", {"model": "plain", "prompt": "hi", "template": huge, "stream": False})
    assert r.status_code == 400 and "Modelyard takes templates of at most 65536 bytes" in r.json()["error"], r.text
    assert took < 10, took


def test_create_refuses_a_template_over_the_limits(c):
    nested = "{{ if .Prompt }}" * 100 + "x" + "{{ end }}" * 100
    r = c.post("/api/create", json={"model": "nested", "from": "plain", "template": nested, "stream": False})
    assert r.status_code == 400 and "nests more than 64" in r.json()["error"], r.text
    assert c.post("/api/show", json={"model": "nested"}).status_code == 404


# ---- prompts by length (item 8) -------------------------------------------------------------

HUGE = "ab " * 1_500_000  # 4.5 MB: tokenized whole, it took seconds and hundreds of MB
ISSUE_SIZE = "ab " * 10_000_000  # the issue's 30 MB (1.1 GB and 19 s before), within the body limit


@pytest.mark.parametrize("path, body, what", [
    ("/v1/completions", {"model": "plain", "prompt": ISSUE_SIZE, "max_tokens": 1}, "The prompt is"),
    ("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": HUGE}]},
     "The conversation is"),
    ("/api/generate", {"model": "plain", "prompt": HUGE, "raw": True, "stream": False}, "The prompt is"),
    ("/v1/embeddings", {"model": "embed", "input": HUGE}, "input[0] is"),
])
def test_a_prompt_longer_than_the_context_can_hold_is_refused_before_tokenizing(c, path, body, what):
    r, took = _timed(c, path, body)
    assert r.status_code == 400, r.text
    text = r.text
    assert what in text and "characters long" in text and "holds at most" in text, text
    assert took < 10, took


# ---- embeddings (item 9) --------------------------------------------------------------------

LONG = "the quick brown fox jumps over the lazy dog " * 45  # about 400 tokens


@pytest.mark.parametrize("path, body, vectors", [
    ("/v1/embeddings", {"model": "dec-embed", "input": LONG}, lambda j: [d["embedding"] for d in j["data"]]),
    ("/api/embed", {"model": "dec-embed", "input": [LONG, "short"]}, lambda j: j["embeddings"]),
    ("/api/embeddings", {"model": "dec-embed", "prompt": LONG}, lambda j: [j["embedding"]]),
])
def test_a_decoder_embeds_an_input_of_hundreds_of_tokens(c, path, body, vectors):
    r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    got = vectors(r.json())
    assert got and all(len(v) == modelgen.LlamaShape().n_embd for v in got)
    assert abs(sum(x * x for x in got[0]) - 1.0) < 1e-3  # unit length


def test_embeddings_of_an_empty_input_list_is_a_400(c):
    r = c.post("/api/embeddings", json={"model": "embed", "input": []})
    assert r.status_code == 400 and "non-empty" in r.json()["error"], r.text


# ---- context sizes (item 6) -----------------------------------------------------------------


def test_a_context_beyond_the_trained_one_is_a_400_not_a_wrapped_500(c):
    r = c.post("/v1/completions", json={"model": "ctx-wrap", "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "1099511627776" in message and "trained for" in message and "2048" in message


def test_a_kv_cache_larger_than_the_memory_is_refused_before_loading(c):
    r, took = _timed(c, "/v1/completions", {"model": "big-kv", "prompt": "hi", "max_tokens": 1})
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    # 64 layers x 4 KV heads x (16 + 16) x 2 bytes = 16 KiB per token, 2^20 tokens, 5 slots
    assert "needs 80.00 GiB" in message and "16384 bytes per token" in message and "available" in message
    assert took < 10, took
    assert "big-kv" not in {m["id"] for m in c.get("/v1/models").json()["data"]}  # nothing half-loaded


def test_a_model_knows_its_longest_token_before_it_is_ready(srv):
    """Every request's length check needs the vocabulary's longest piece. Read by the first
    request, a burst of first requests on a new pod each read the whole vocabulary at once
    (64 of them took 35 s to their first bytes), so the manager reads it at load."""
    from modelyard.server.inference.manager import ModelManager
    from modelyard.server.registry.store import Store
    from modelyard.server.settings import Settings

    manager = ModelManager(Store(srv.store), Settings(store=srv.store, threads=1, parallel=1))
    try:
        item = manager.load("plain")
        assert item.model._max_piece is not None  # read at load: no request pays for it
        assert item.model.max_piece_bytes == item.model._max_piece >= max(
            len(item.model.piece(t, True)) for t in range(item.model.n_vocab))
    finally:
        manager.close()
