"""gguf.kvCacheType through a real server: the registry takes it (or says why not), and the
engine runs with it, as /metrics shows from llama.cpp's own measure of a token's bytes in
the cache (taken when the engine loads: modelyard_kv_cache_bytes_per_token)."""
from __future__ import annotations

import re

import httpx
import pytest

from support.servers import Server
from test_kv_cache import make_model_file

KEY = "kvq"
AUTH = {"Authorization": f"Bearer {KEY}"}
CTX = {"initContextSize": 512}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("kvq-server")
    model_file = make_model_file(root)
    server = Server(root / "store", api_key=KEY, args=("--threads", "2", "--parallel", "2"),
                    log_path=root / "server.log").start()
    try:
        for model_id, gguf in (("kv-q8", {**CTX, "kvCacheType": "q8_0"}), ("kv-f16", CTX)):
            r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                           json={"id": model_id, "version": "1", "kind": "llm", "gguf": gguf})
            assert r.status_code == 201, r.text
            with open(model_file, "rb") as f:
                r = httpx.post(f"{server.url}/store/v1/models/{model_id}/upload", headers=AUTH,
                               files={"file": ("m.gguf", f)}, timeout=120)
            assert r.status_code == 200 and r.json()["readyToUse"], r.text
        yield server
    finally:
        server.stop()


def kv_bytes(server) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    return {(m, t): float(v) for m, t, v in re.findall(
        r'^modelyard_kv_cache_bytes_per_token\{model="([^"]+)",type="([^"]+)"\} (\S+)$', text, re.M)}


def chat(server, model_id: str) -> dict:
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120, json={
        "model": model_id, "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_registry_keeps_the_type_and_the_engine_runs_with_it(server):
    assert httpx.get(f"{server.url}/store/v1/models/kv-q8").json()["gguf"]["kvCacheType"] == "q8_0"
    for model_id in ("kv-q8", "kv-f16"):
        body = chat(server, model_id)
        assert body["usage"]["completion_tokens"] >= 1 and body["choices"][0]["message"]["content"]
    measured = kv_bytes(server)
    q8, f16 = measured[("kv-q8", "q8_0")], measured[("kv-f16", "f16")]
    assert q8 / f16 <= 0.55, measured

    # a change of type in the registry reloads the model with it on its next use
    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH, json={
        "id": "kv-q8", "action": "update", "gguf": {"kvCacheType": "q4_0"}})
    assert r.status_code == 200, r.text
    chat(server, "kv-q8")
    measured = kv_bytes(server)
    assert ("kv-q8", "q8_0") not in measured
    assert measured[("kv-q8", "q4_0")] / f16 <= 0.30, measured


@pytest.mark.parametrize("body, words", [
    ({"id": "bad", "version": "1", "kind": "llm", "gguf": {"kvCacheType": "q5_0"}},
     "Field 'gguf.kvCacheType': Input should be 'f16', 'q8_0' or 'q4_0'"),
    ({"id": "bad", "version": "1", "kind": "llm", "gguf": {"kvCacheType": 8}},
     "Field 'gguf.kvCacheType': Input should be 'f16', 'q8_0' or 'q4_0'"),
    ({"id": "bad", "version": "1", "kind": "embed", "gguf": {"kvCacheType": "q8_0"}},
     "Field 'gguf.kvCacheType' applies only to kinds llm and vlm"),
])
def test_invalid_values_get_a_clear_400(server, body, words):
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"], r.text


def test_an_update_to_an_unknown_type_is_refused(server):
    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH, json={
        "id": "kv-f16", "action": "update", "gguf": {"kvCacheType": "q4"}})
    assert r.status_code == 400 and "kvCacheType" in r.json()["error"]["message"], r.text


def test_a_load_that_names_a_type_keeps_it_for_later_requests(server):
    # what Silicon Studio's load with kv_quantization calls, on the server's store
    from modelyard.server.inference.manager import ModelManager
    from modelyard.server.registry.store import Store
    from modelyard.server.settings import Settings
    from modelyard.server.shared.facts import kv_cache_type_for_bits

    manager = ModelManager(Store(server.store), Settings(store=server.store, threads=2, parallel=1))
    try:
        item = manager.load_with_kv_cache_type("kv-f16", kv_cache_type_for_bits(8), by="a test")
        assert (item.engine.kv_cache_type, item.engine.kv_bytes_per_token) == ("q8_0", 1644)
        assert manager.get("kv-f16") is item  # other APIs' requests use it as loaded
        item = manager.load_with_kv_cache_type("kv-f16", None, by="a test")  # back to the registry's
        assert (item.engine.kv_cache_type, item.engine.kv_bytes_per_token) == ("f16", 3084)
    finally:
        manager.close()


def test_serve_overrides_the_type_of_preloaded_models(server):
    server.stop()
    server.args += ("--preload", "kv-f16", "--kv-cache-type", "q4_0")
    server.start(wait_ready=True, timeout=120)
    measured = kv_bytes(server)
    assert set(measured) == {("kv-f16", "q4_0")}, measured
    assert measured[("kv-f16", "q4_0")] == 876  # 4 layers x (K + V) x 6 q4_0 blocks of 18 bytes + 12
    chat(server, "kv-f16")
