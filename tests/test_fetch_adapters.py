"""A Model's spec.adapters as its download Job fetches them: `modelyard fetch --adapter ...`, a
real process, the base from a local file server and adapters from a local stand-in for the
Hugging Face Hub and from the cache volume itself. Each adapter is checked against the base and
registered as a model of kind adapter; one dropped from the list is removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard.server.finetune import lora_gguf
from modelyard.server.registry.store import Store
from support.hubs import FileHub
from support.servers import Server

sys.path.insert(0, str(Path(__file__).resolve().parent / "inference"))
import modelgen  # noqa: E402


def adapter(path: Path, n_embd: int, rank: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pairs = {f"base_model.model.model.layers.{i}.self_attn.q_proj":
             (rng.standard_normal((rank, n_embd)).astype(np.float32),
              rng.standard_normal((n_embd, rank)).astype(np.float32)) for i in range(2)}
    return lora_gguf.write(path, pairs, "llama", n_head=4, n_head_kv=2, alpha=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("adapters")
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", base="gpt-2", n_base=300)
    base = modelgen.make_llama_gguf(d / "base.gguf", vocab=vocab, chat_template=None,
                                    shape=modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2))
    return {"base": base.read_bytes(), "fits": adapter(d / "a.gguf", 64).read_bytes(),
            "other": adapter(d / "b.gguf", 64, rank=2, seed=1).read_bytes(),
            "wrong": adapter(d / "w.gguf", 32).read_bytes()}


def fetch(env, *args) -> tuple[int, list[dict]]:
    done = subprocess.run([sys.executable, "-m", "modelyard.server.cli", "fetch", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def flag(**fields) -> str:
    return json.dumps(fields)


def test_adapters_fetched_checked_registered_and_dropped(files, tmp_path):
    with FileHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        base_url = hub.add("base.gguf", files["base"])
        hub.add_hf("org/loras", "sql.gguf", files["fits"])
        store = tmp_path / "cache"
        (store / "adapters").mkdir(parents=True)
        (store / "adapters" / "p.gguf").write_bytes(files["other"])
        common = [base_url, "--store", str(store), "--id", "m", "--kind", "llm"]
        code, lines = fetch(env, *common, "--adapter", flag(name="sql", source="hf://org/loras/sql.gguf"),
                            "--adapter", flag(name="mine", path="adapters/p.gguf"))
        assert code == 0, lines
        assert lines[-1]["done"] is True and lines[-1]["model"]["id"] == "m"
        assert any(line.get("adapter", {}).get("name") == "sql" for line in lines)  # apart from the base's
        s = Store(store)
        for name, rank in (("sql", 4), ("mine", 2)):
            view, meta = s.get(name), s.meta(name)
            assert view["kind"] == "adapter" and view["readyToUse"] is True
            assert meta["adapter"] == {"base": "m", "origin": "spec.adapters", "rank": rank, "alpha": 8.0}
        assert sorted(s.adapters_of("m")) == ["mine", "sql"]

        # A pod's server (`serve --preload m`, as the operator starts it) serves each by its name.
        server = Server(store, api_key="k", args=("--preload", "m", "--threads", "1"),
                        log_path=tmp_path / "serve.log").start(wait_ready=True)
        try:
            for name in ("sql", "mine"):
                r = httpx.post(f"{server.url}/v1/completions", headers={"Authorization": "Bearer k"},
                               json={"model": name, "prompt": "Hello", "max_tokens": 2}, timeout=60)
                assert r.status_code == 200 and r.json()["model"] == name, r.text
        finally:
            server.stop()

        # The operator's Job for a change of spec.adapters alone (--adapters-only), with one
        # adapter fewer: nothing downloaded again, the dropped one removed.
        gets = len(hub.log)
        code, lines = fetch(env, *common, "--adapter", flag(name="mine", path="adapters/p.gguf"), "--adapters-only")
        assert code == 0, lines
        assert len(hub.log) == gets and s.adapters_of("m") == ["mine"]

        # An adapter made for another shape fails the Job (before any removal), is never listed,
        # and the error names it (the operator's AdaptersReady condition shows this message).
        hub.add_hf("org/loras", "wrong.gguf", files["wrong"])
        code, lines = fetch(env, *common, "--adapter", flag(name="w", source="hf://org/loras/wrong.gguf"),
                            "--adapters-only")
        message = lines[-1]["error"]["message"]
        assert code == 1 and message.startswith("Adapter 'w': ") and "does not fit" in message
        assert s.adapters_of("m") == ["mine"] and "w" not in [m["id"] for m in s.list()]

        # --adapters-only never downloads the base: without it complete in the store, it fails.
        gets = len(hub.log)
        code, lines = fetch(env, base_url, "--store", str(tmp_path / "empty"), "--id", "m", "--kind", "llm",
                            "--adapter", flag(name="sql", source="hf://org/loras/sql.gguf"), "--adapters-only")
        assert code == 1 and "not complete in the store" in lines[-1]["error"]["message"]
        assert len(hub.log) == gets


@pytest.mark.parametrize("value, says", [
    ('{"name": "a"}', "exactly one of source or path"),
    ('{"name": "a", "path": "../x.gguf"}', "cannot leave it"),
    ('{"name": "../a", "path": "x.gguf"}', "may contain only"),
    ("sql=hf://x", "JSON object"),
])
def test_bad_adapter_flags_are_usage_errors(tmp_path, value, says):
    done = subprocess.run([sys.executable, "-m", "modelyard.server.cli", "fetch", "https://example.invalid/x.gguf",
                           "--store", str(tmp_path), "--id", "m", "--kind", "llm", "--adapter", value],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr
