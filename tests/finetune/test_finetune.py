"""LoRA fine-tuning end to end on a real gunicorn (Silicon Studio's routes, seed 001): a job
trains a generated llama model in a trainer child process, its loss falls, the adapter is a
model in the store, and llama.cpp applying that GGUF adapter decodes what peft's model does.
Plus the refusals (each before any job starts), the queue, cancel, a crash and a restart."""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.servers import Server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="the finetune extra is not installed (pip install -e '.[finetune]'; make test installs it)")

E = "/api/engine"
KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "What is the password?"
ANSWER = "swordfish"
# Enough for the answer to be learnt by a 2-layer model, in a few seconds.
TRAIN = {"epochs": 6, "learning_rate": 0.02, "batch_size": 4, "lora_rank": 8, "lora_alpha": 16,
         "lora_layers": 2, "max_seq_length": 64, "seed": 7}


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ft-model")
    # gpt-2's first 2,000 tokens plus ChatML's: transformers reads a small vocabulary quickly
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", base="gpt-2", n_base=2000,
                                     extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    return modelgen.make_llama_gguf(d / "base.gguf", vocab=vocab, seed=5,
                                    shape=modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ft-data")
    chat = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
    (d / "train.jsonl").write_text("\n".join(json.dumps(chat) for _ in range(8)) + "\n")
    return d


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def c(srv):
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as client:
        yield client


def start(c, data: Path, **fields) -> dict:
    body = {"model_id": "base", "dataset_path": str(data / "train.jsonl"), **TRAIN, **fields}
    r = c.post(f"{E}/finetune", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def wait(c, job_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"{E}/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")


@pytest.mark.parametrize("change, status, says", [
    ({"lora_rank": 0}, 400, "lora_rank"),
    ({"epochs": 101}, 400, "epochs"),
    ({"max_seq_length": 32}, 400, "max_seq_length"),
    ({"batch_size": 65}, 400, "batch_size"),
    ({"lora_layers": 129}, 400, "lora_layers"),
    ({"job_name": "../x"}, 400, "job_name"),
    ({"model_id": "nope"}, 404, "nope"),
    ({"dataset_path": "/etc/passwd"}, 403, "not inside a folder"),
    ({"dataset_path": "{data}/missing.jsonl"}, 400, "does not exist"),
    ({"dataset_path": "{data}/bad.jsonl"}, 400, "Line 2 of"),
    ({"dataset_path": "{data}/empty.jsonl"}, 400, "has no examples"),
])
def test_refused_before_any_job(c, data, change, status, says):
    (data / "bad.jsonl").write_text('{"text": "fine"}\n{"prompt": 3}\n')
    (data / "empty.jsonl").write_text("\n")
    before = len(c.get(f"{E}/jobs").json())
    body = {"model_id": "base", "dataset_path": str(data / "train.jsonl"), **TRAIN,
            **{k: v.format(data=data) if isinstance(v, str) else v for k, v in change.items()}}
    r = c.post(f"{E}/finetune", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert len(c.get(f"{E}/jobs").json()) == before


def test_train_queue_register_and_same_seed(c, data, srv):
    first = start(c, data, job_name="pw-a")
    second = start(c, data, job_name="pw-b")  # the same seed and data
    assert second["status"] == "queued"  # one trainer at a time: the second waits
    assert first["total_steps"] == 2 * TRAIN["epochs"]
    done = wait(c, first["job_id"])
    assert done["status"] == "completed", done
    assert done["step"] == done["total_steps"] and done["epoch"] == TRAIN["epochs"]
    history = [point["loss"] for point in done["loss_history"]]
    assert len(history) == done["total_steps"]
    assert history[-1] < history[0] / 2, history  # it learnt
    assert done["tokens_per_second"] > 0
    assert wait(c, second["job_id"])["status"] == "completed"

    adapters = {a["id"]: a for a in c.get(f"{E}/models/adapters").json()}
    assert set(adapters) == {"pw-a", "pw-b"}
    a = adapters["pw-a"]
    assert (a["is_finetuned"], a["base_model_id"], a["lora_rank"], a["lora_alpha"], a["status"]) == \
        (True, "base", 8, 16.0, "ready")
    listed = {m["id"]: m for m in c.get(f"{E}/models").json()}
    assert listed["pw-a"]["is_finetuned"] and not listed["base"]["is_finetuned"]
    views = {i: c.get(f"/store/v1/models/{i}").json() for i in ("pw-a", "pw-b")}
    assert views["pw-a"]["kind"] == "adapter" and views["pw-a"]["readyToUse"] is True
    assert views["pw-a"]["sha256"] == views["pw-b"]["sha256"]  # same seed, same adapter

    r = c.delete("/store/v1/models/base")
    assert r.status_code == 409 and "pw-a" in r.text and "pw-b" in r.text, r.text
    assert c.post(f"{E}/finetune", json={"model_id": "base", "dataset_path": str(data / "train.jsonl"),
                                         "job_name": "pw-a"}).status_code == 409


def test_adapter_decodes_as_peft_does(c, srv, base_file):
    """llama.cpp with the GGUF adapter and peft with the trained LoRA (float32) pick the same
    16 greedy tokens, and both give the taught answer that the base alone does not."""
    import llama_cpp

    adapter = srv.store / "models" / "pw-a" / "model.gguf"
    prompt = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    base = llama_cpp.Llama(str(base_file), n_ctx=128, n_threads=2, verbose=False)
    tuned = llama_cpp.Llama(str(base_file), lora_path=str(adapter), n_ctx=128, n_threads=2, verbose=False)
    ids = tuned.tokenize(prompt.encode(), add_bos=False, special=True)

    def greedy(llm) -> list[int]:
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) == 16:
                return out

    served = greedy(tuned)
    assert tuned.detokenize(served).decode(errors="replace").startswith(ANSWER)
    assert not base.detokenize(greedy(base)).decode(errors="replace").startswith(ANSWER)
    assert served == peft_greedy(base_file, adapter, ids, 16)


def peft_greedy(base_file: Path, adapter: Path, ids: list[int], n: int) -> list[int]:
    """The trained LoRA in peft, rebuilt from the GGUF adapter (the inverse permutation of
    q and k's B), greedy in float32."""
    import gguf
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modelyard.server.finetune import lora_gguf

    model = AutoModelForCausalLM.from_pretrained(str(base_file.parent), gguf_file=base_file.name,
                                                 dtype=torch.float32)
    cfg = model.config
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=lora_gguf.TARGET_MODULES))
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(adapter)).tensors}
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            target = lora_gguf.gguf_name(name)
            b = tensors[target + ".lora_b"]
            kind = target.split(".")[2]
            if kind in heads:  # undo permute: the inverse of swapping axes 1 and 2
                h = heads[kind]
                b = b.reshape(h, b.shape[0] // h // 2, 2, -1).swapaxes(1, 2).reshape(b.shape)
            module.lora_A["default"].weight.copy_(torch.from_numpy(tensors[target + ".lora_a"]))
            module.lora_B["default"].weight.copy_(torch.from_numpy(np.ascontiguousarray(b)))
        model.eval()
        seq = list(ids)
        for _ in range(n):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            seq.append(int(torch.argmax(logits)))
    return seq[len(ids):]


def test_cancel_a_running_job(c, data):
    job = start(c, data, job_name="cancelled-one", epochs=100)
    wait(c, job["job_id"], statuses=("running",))
    r = c.post(f"{E}/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200, r.text
    assert wait(c, job["job_id"])["status"] == "cancelled"
    assert c.get("/store/v1/models/cancelled-one").status_code == 404
    assert c.post(f"{E}/jobs/{job['job_id']}/cancel").status_code == 409
    assert c.get(f"{E}/jobs/nope").status_code == 404


def test_a_job_running_when_the_server_died_is_failed(c, data, srv):
    job = start(c, data, job_name="crashed", epochs=100)
    wait(c, job["job_id"], statuses=("running",))
    srv.kill()  # the server and its trainer child, as a crash would
    srv.start()
    after = c.get(f"{E}/jobs/{job['job_id']}").json()
    assert after["status"] == "failed" and "server stopped" in after["error"], after
    assert c.get("/store/v1/models/crashed").status_code == 404
    assert not list((srv.store / "finetune" / "work").glob("*/adapter.gguf"))
    assert {j["id"] for j in c.get(f"{E}/jobs").json()} >= {job["job_id"]}
