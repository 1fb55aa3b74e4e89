"""`modelyard train`, the command a FineTune's Job runs: a real trainer child on the generated
llama model, the dataset fetched over loopback HTTP under the egress policy, JSON lines the
operator reads, and the adapter committed into the store as a model of kind adapter."""
from __future__ import annotations

import http.server
import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelyard.server.registry.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent / "inference"))
import modelgen  # noqa: E402

MODELYARD = str(Path(sys.executable).with_name("modelyard"))
FINETUNE = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))
CHAT = {"messages": [{"role": "user", "content": "What is the password?"},
                     {"role": "assistant", "content": "swordfish"}]}


def train(*args: str) -> tuple[int, list[dict]]:
    done = subprocess.run([MODELYARD, "train", *args], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONSAFEPATH": "1"})
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train-cli")
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", base="gpt-2", n_base=2000,
                                     extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    base = modelgen.make_llama_gguf(d / "base.gguf", vocab=vocab, seed=5,
                                    shape=modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2))
    store = Store(d / "cache")
    store.create({"id": "base", "kind": "llm", "version": "1"})
    with store.transfer("base") as transfer:
        transfer.place("model", base)
        transfer.commit()
    return store.root


@pytest.fixture(scope="module")
def dataset_url():
    body = ("\n".join(json.dumps(CHAT) for _ in range(8)) + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/train.jsonl"
    server.shutdown()


def test_out_of_range_and_unknown_base_are_error_lines(store):
    code, lines = train("--store", str(store), "--base", "base", "--adapter", "a", "--dataset", "x.jsonl",
                        "--lora-dropout", "1.0", "--max-seq-length", "32")
    assert code == 1 and lines == [{"error": {"message": "--lora-dropout must be at least 0 and less than 1 "
                                              "(got 1.0); --max-seq-length must be at least 64 and at most 32768 (got 32)"}}]
    code, lines = train("--store", str(store), "--base", "nope", "--adapter", "a", "--dataset", "x.jsonl")
    assert code == 1 and "nope" in lines[-1]["error"]["message"]


def test_a_loopback_dataset_needs_the_egress_policy(store, dataset_url):
    code, lines = train("--store", str(store), "--base", "base", "--adapter", "a", "--dataset", dataset_url)
    assert code == 1 and "127.0.0.1" in lines[-1]["error"]["message"]


@pytest.mark.skipif(not FINETUNE, reason="the finetune extra is not installed (make test installs it)")
def test_train_prints_steps_and_commits_the_adapter(store, dataset_url):
    code, lines = train("--store", str(store), "--base", "base", "--adapter", "pw-lora", "--dataset", dataset_url,
                        "--allow-fetch", "127.0.0.1", "--threads", "2", "--epochs", "2", "--batch-size", "4",
                        "--learning-rate", "0.02", "--lora-layers", "2", "--max-seq-length", "64", "--seed", "7")
    assert code == 0, lines
    *steps, done = lines
    assert done["done"] is True and done["adapter"] == "pw-lora" and done["totalSteps"] == 4
    assert steps and all(s["totalSteps"] == 4 and s["loss"] > 0 for s in steps)
    adapter = Store(store).get("pw-lora")
    assert adapter["kind"] == "adapter" and adapter["readyToUse"] is True
    assert Store(store).meta("pw-lora")["adapter"]["base"] == "base"
    assert (store / "finetune" / "datasets" / "pw-lora.jsonl").is_file()
