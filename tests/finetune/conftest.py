"""The fine-tuning tests' one server and one training, shared by test_training.py and
test_tuned_models.py (package scope: this folder is a package for it): one gunicorn serves
both files, and the training they share (pw-a) is submitted by the first test that needs it
and trains in the server's child while the tests that need no adapter run.

test_training.py runs first (pytest takes the files in name order): it checks that pw-a is
the only adapter, before test_tuned_models.py makes more from it, and test_tuned_models.py
ends with the crash that restarts the server.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from finetune.tuning import ANSWER, AUTH, KEY, QUESTION, start, wait
from support.servers import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402


@pytest.fixture(scope="package")
def base_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ft-model")
    # gpt-2's first 2,000 tokens plus ChatML's: transformers reads a small vocabulary quickly
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", base="gpt-2", n_base=2000,
                                     extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    return modelgen.make_llama_gguf(d / "base.gguf", vocab=vocab, seed=5,
                                    shape=modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2))


@pytest.fixture(scope="package")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ft-data")
    chat = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
    (d / "train.jsonl").write_text("\n".join(json.dumps(chat) for _ in range(8)) + "\n")
    return d


@pytest.fixture(scope="package")
def srv(tmp_path_factory, base_file, data):
    root = tmp_path_factory.mktemp("ft-server")
    server = Server(root / "store", api_key=KEY, log_path=root / "server.log",
                    args=("--threads", "2", "--allow-path", str(data))).start()
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH, json={"id": "base", "version": "1", "kind": "llm"})
    assert r.status_code in (200, 201), r.text
    with open(base_file, "rb") as f:
        r = httpx.post(f"{server.url}/store/v1/models/base/upload", headers=AUTH, files={"file": f}, timeout=60)
    assert r.status_code == 200, r.text
    yield server
    server.stop()


@pytest.fixture(scope="package")
def c(srv):
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def started(c, data) -> dict:
    """pw-a: submitted once, trained while the tests that need no adapter run."""
    return start(c, data, job_name="pw-a")


@pytest.fixture(scope="package")
def trained(c, started) -> dict:
    return wait(c, started["job_id"])

