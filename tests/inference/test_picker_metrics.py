"""The gauges the Gateway API Inference Extension's endpoint picker reads (vLLM's names), on a
real server with requests running and waiting, and a LoRA adapter among them.

One ordinary slot (--parallel 1; the engine adds one priority slot) and a 2048-token context
per slot: a long generation holds the slot while the others wait behind it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import AUTH, KEY
from support.servers import Server

from modelyard.server.finetune import lora_gguf
from modelyard.server.registry.store import Store
from modelyard.server.shared.facts import ADAPTER_KIND

CTX = 2048
SLOTS = 2  # --parallel 1 and the engine's one priority slot
NO_EOS = {"151643": -100, "151645": -100}
PICKER = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
          "vllm:lora_requests_info", "vllm:cache_config_info")


@pytest.fixture(scope="module")
def srv(tmp_path_factory, store_dir):
    """A server on a copy of the shared store, with an adapter of its own and a longer context."""
    root = tmp_path_factory.mktemp("picker")
    shutil.copytree(store_dir, root / "store")
    _add_adapter(root)
    server = Server(root / "store", api_key=KEY, args=("--threads", "2", "--parallel", "1"),
                    log_path=root / "server.log").start()
    try:
        r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH,
                      json={"id": "chat", "action": "update", "gguf": {"initContextSize": CTX}})
        assert r.status_code == 200, r.text
        r = httpx.post(f"{server.url}/v1/models", headers=AUTH, json={"model": "chat"}, timeout=120)
        assert r.status_code == 200, r.text
        yield server
    finally:
        server.stop()


def _add_adapter(root) -> None:
    """'chat-lora': a random LoRA on the chat model's q projections, stored as Ollama's create
    stores one (registry/derive.py), without its fit check: that reads the whole base GGUF,
    151k-token vocabulary and all, in Python (about 25 s here; tested in tests/finetune)."""
    rng = np.random.default_rng(0)
    pairs = {f"base_model.model.model.layers.{i}.self_attn.q_proj":
             (rng.standard_normal((4, 64)).astype(np.float32), rng.standard_normal((64, 4)).astype(np.float32))
             for i in range(2)}
    path = lora_gguf.write(root / "lora.gguf", pairs, "llama", n_head=4, n_head_kv=2, alpha=8)
    store = Store(root / "store")
    fields = {"id": "chat-lora", "kind": ADAPTER_KIND, "adapter": {"base": "chat", "rank": 4, "alpha": 8.0}}
    with store.provisional(fields, new={"version": ""}):
        with store.transfer("chat-lora") as transfer:
            transfer.place("model", path)
            transfer.commit()


def scrape(server: Server) -> dict:
    """{name: (type, [(labels, value), ...])} of the picker's families."""
    r = httpx.get(f"{server.url}/metrics", timeout=10)
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    return {name: (families[name].type, [(s.labels, s.value) for s in families[name].samples])
            for name in PICKER if name in families}


def value(m: dict, name: str) -> float:
    [(labels, v)] = m[name][1]
    assert labels["model_name"] == "chat"
    return v


def lora(m: dict) -> dict:
    [(labels, _)] = m["vllm:lora_requests_info"][1]
    return labels


def wait_for(server: Server, check, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(server)
        if check(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.02)


class Stream(threading.Thread):
    """A long streamed generation, read until stop() (then its connection closes: the server
    cancels it)."""

    def __init__(self, server: Server, model: str, i: int):
        super().__init__(daemon=True)
        self.server, self.model, self.i = server, model, i
        self.stopped = threading.Event()
        self.start()

    def run(self):
        body = {"model": self.model, "messages": [{"role": "user", "content": f"Story {self.i}"}],
                "max_tokens": CTX - 64, "stream": True, "logit_bias": NO_EOS}
        with httpx.stream("POST", f"{self.server.url}/v1/chat/completions", headers=AUTH, json=body,
                          timeout=120) as r:
            for _ in r.iter_lines():
                if self.stopped.is_set():
                    return

    def stop(self):
        self.stopped.set()
        self.join(30)


def test_idle_pod(srv):
    m = scrape(srv)
    assert set(m) == set(PICKER)
    assert {t for t, _ in m.values()} == {"gauge"}  # the picker reads gauges and counters only
    assert value(m, "vllm:num_requests_waiting") == 0
    assert value(m, "vllm:num_requests_running") == 0
    assert value(m, "vllm:kv_cache_usage_perc") == 0
    assert lora(m) == {"model_name": "chat", "max_lora": str(SLOTS), "running_lora_adapters": "",
                       "waiting_lora_adapters": ""}
    [(cache, one)] = m["vllm:cache_config_info"][1]
    assert cache == {"model_name": "chat", "block_size": "1", "num_gpu_blocks": str(CTX * SLOTS)}
    assert one == 1


def test_running_and_waiting(srv):
    streams = []
    try:
        streams.append(Stream(srv, "chat", 0))  # takes the only ordinary slot
        m = wait_for(srv, lambda m: value(m, "vllm:num_requests_running") == 1
                     and value(m, "vllm:kv_cache_usage_perc") > 0)
        assert value(m, "vllm:num_requests_running") == 1
        streams.append(Stream(srv, "chat-lora", 1))
        m = wait_for(srv, lambda m: value(m, "vllm:num_requests_waiting") == 1)
        streams.append(Stream(srv, "chat", 2))
        m = wait_for(srv, lambda m: value(m, "vllm:num_requests_waiting") == 2)
        assert value(m, "vllm:num_requests_waiting") == 2
        assert value(m, "vllm:num_requests_running") == 1
        used = value(m, "vllm:kv_cache_usage_perc")
        assert 0 < used <= 1 / SLOTS  # one slot's cells of the two
        assert lora(m)["running_lora_adapters"] == "" and lora(m)["waiting_lora_adapters"] == "chat-lora"
        since = m["vllm:lora_requests_info"][1][0][1]
        assert abs(since - time.time()) < 60  # a timestamp: the newest series wins in the picker
        # the cache fills as the running request generates
        m = wait_for(srv, lambda m: value(m, "vllm:kv_cache_usage_perc") > used)
        assert value(m, "vllm:kv_cache_usage_perc") > used

        streams[0].stop()  # the adapter's request, the oldest waiting, takes the slot
        m = wait_for(srv, lambda m: lora(m)["running_lora_adapters"] == "chat-lora"
                     and value(m, "vllm:num_requests_waiting") == 1)
        assert lora(m) == {"model_name": "chat", "max_lora": str(SLOTS), "running_lora_adapters": "chat-lora",
                           "waiting_lora_adapters": ""}
        assert value(m, "vllm:num_requests_running") == 1
        assert len(m["vllm:lora_requests_info"][1]) == 1  # the old set's series is gone
    finally:
        for s in streams:
            s.stop()
    m = wait_for(srv, lambda m: value(m, "vllm:num_requests_running") == 0
                 and value(m, "vllm:num_requests_waiting") == 0)
    assert value(m, "vllm:num_requests_running") == 0 and value(m, "vllm:num_requests_waiting") == 0
    assert value(m, "vllm:kv_cache_usage_perc") == 0
    assert lora(m)["running_lora_adapters"] == "" and lora(m)["waiting_lora_adapters"] == ""
    # the server's own gauges are kept
    r = httpx.get(f"{srv.url}/metrics", timeout=10)
    assert 'modelyard_queue_depth{model="chat"}' in r.text


GATEWAY_TEST = os.environ.get("MODELYARD_GATEWAY_TEST") == "1"  # `make gateway-test`: Go and minutes


@pytest.mark.skipif(not GATEWAY_TEST, reason="make gateway-test: GAIE's extractor is built with Go (minutes)")
def test_the_pickers_own_extractor_reads_them(srv, tmp_path):
    """GAIE v1.5.0's own parser and extractor (tools/gaie/probe.sh) on this pod's /metrics,
    with a LoRA request running and another waiting: no error, and the numbers it scores on."""
    streams = [Stream(srv, "chat-lora", 0)]
    try:
        wait_for(srv, lambda m: value(m, "vllm:num_requests_running") == 1)
        streams.append(Stream(srv, "chat", 1))
        m = wait_for(srv, lambda m: value(m, "vllm:num_requests_waiting") == 1)
        assert value(m, "vllm:num_requests_waiting") == 1
        text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    finally:
        for s in streams:
            s.stop()
    (tmp_path / "metrics.txt").write_text(text)
    done = subprocess.run(["bash", str(Path(__file__).parents[2] / "tools" / "gaie" / "probe.sh"),
                           str(tmp_path / "metrics.txt")], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("MODELYARD_METRICS ")]
    seen = json.loads(line.split(" ", 1)[1])
    assert seen["WaitingQueueSize"] == 1 and seen["RunningRequestsSize"] == 1
    assert 0 < seen["KVCacheUsagePercent"] <= 1 / SLOTS
    assert seen["ActiveModels"] == {"chat-lora": 0} and not seen["WaitingModels"]
    assert seen["MaxActiveModels"] == SLOTS
    assert (seen["CacheBlockSize"], seen["CacheNumBlocks"]) == (1, CTX * SLOTS)
