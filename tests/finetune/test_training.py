"""LoRA fine-tuning end to end on a real gunicorn (Silicon Studio's routes, seed 001): a job
trains a generated llama model in a trainer child process, its loss falls, the adapter is a
model in the store, and llama.cpp applying that GGUF adapter decodes what peft's model does.
Plus the refusals (each before any job starts), the queue and cancel. What is made from the
adapter (served, created, exported) is test_tuned_models.py's.

The training the tests share (pw-a, conftest.py's) is submitted by the first test and trains
in the server's child while the tests that need no adapter run: the trainer's start (importing
torch, transformers and peft) is most of a job's time, not its steps. The same seed's second
run, which shows the adapter's bytes are the seed's, runs the same trainer code in the test's
process, where those imports are paid already."""
from __future__ import annotations

from pathlib import Path

import pytest

from finetune.tuning import ANSWER, E, QUESTION, TRAIN, needs_finetune, start, wait

pytestmark = needs_finetune


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
def test_refused_before_any_job(c, data, started, change, status, says):
    (data / "bad.jsonl").write_text('{"text": "fine"}\n{"prompt": 3}\n')
    (data / "empty.jsonl").write_text("\n")
    before = len(c.get(f"{E}/jobs").json())
    body = {"model_id": "base", "dataset_path": str(data / "train.jsonl"), **TRAIN,
            **{k: v.format(data=data) if isinstance(v, str) else v for k, v in change.items()}}
    r = c.post(f"{E}/finetune", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert len(c.get(f"{E}/jobs").json()) == before


def test_gguf_adapter_applies_as_peft_does(base_file, tmp_path):
    """The converter alone, where the q/k row permutation decides: a LoRA on q and k only,
    large, random. llama.cpp with the written GGUF and peft agree on the logits; without
    the permutation they would not (checked by leaving it out)."""
    import llama_cpp
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modelyard.server.finetune import lora_gguf

    model = AutoModelForCausalLM.from_pretrained(str(base_file.parent), gguf_file=base_file.name,
                                                 dtype=torch.float32)
    cfg = model.config
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"]))
    torch.manual_seed(0)
    pairs = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                for part in (module.lora_A["default"], module.lora_B["default"]):
                    part.weight.copy_(torch.randn_like(part.weight) * 0.5)
                pairs[name] = (module.lora_A["default"].weight.numpy(), module.lora_B["default"].weight.numpy())
        adapter = lora_gguf.write(tmp_path / "qk.gguf", pairs, "llama", cfg.num_attention_heads,
                                  cfg.num_key_value_heads, 8)
        llm = llama_cpp.Llama(str(base_file), lora_path=str(adapter), n_ctx=64, n_threads=2, logits_all=True,
                              verbose=False)
        ids = llm.tokenize(b"The quick brown fox jumps over the lazy dog", add_bos=False)
        llm.eval(ids)
        ours = np.array(llm.scores[len(ids) - 1])
        theirs = model.eval()(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    spread = float(np.abs(theirs - theirs.mean()).max())
    # llama.cpp and torch agree to about 1e-2 on this model without an adapter too (F32 sums in
    # another order); a wrong permutation is off by the whole spread of the logits
    assert float(np.abs(ours - theirs).max()) < 1e-2 * max(spread, 1.0), (ours[:5], theirs[:5])


def test_train_register_and_same_seed(c, data, srv, base_file, started, trained, tmp_path):
    assert started["total_steps"] == 2 * TRAIN["epochs"]
    done = trained
    assert done["status"] == "completed", done
    assert done["step"] == done["total_steps"] and done["epoch"] == TRAIN["epochs"]
    history = [point["loss"] for point in done["loss_history"]]
    assert len(history) == done["total_steps"]
    assert history[-1] < history[0] / 2, history  # it learnt
    assert done["tokens_per_second"] > 0

    adapters = {a["id"]: a for a in c.get(f"{E}/models/adapters").json()}
    assert set(adapters) == {"pw-a"}
    a = adapters["pw-a"]
    assert (a["is_finetuned"], a["base_model_id"], a["lora_rank"], a["lora_alpha"], a["status"]) == \
        (True, "base", 8, 16.0, "ready")
    listed = {m["id"]: m for m in c.get(f"{E}/models").json()}
    assert listed["pw-a"]["is_finetuned"] and not listed["base"]["is_finetuned"]
    view = c.get("/store/v1/models/pw-a").json()
    assert view["kind"] == "adapter" and view["readyToUse"] is True
    assert view["adapter"] == {"base": "base", "rank": 8, "alpha": 16.0, "job_id": started["job_id"]}
    assert [m["id"] for m in c.get("/store/v1/models?kind=adapter").json()["data"]] == ["pw-a"]

    r = c.delete("/store/v1/models/base")
    assert r.status_code == 409 and "pw-a" in r.text, r.text
    assert c.post(f"{E}/finetune", json={"model_id": "base", "dataset_path": str(data / "train.jsonl"),
                                         "job_name": "pw-a"}).status_code == 409

    # The same seed, data and settings give the same adapter, byte for byte: the job's trainer
    # run again on the job's own spec (its params hold the seed it used).
    import hashlib

    from modelyard.server.finetune import trainer
    from modelyard.server.finetune.spec import Spec

    again = tmp_path / "again.gguf"
    trainer.train(Spec(base=str(base_file), dataset=str(data / "train.jsonl"), output=str(again), threads=2,
                       **done["params"]))
    assert hashlib.sha256(again.read_bytes()).hexdigest() == view["sha256"]


def test_adapter_decodes_as_peft_does(c, srv, base_file, trained):
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


def test_cancel_a_queued_and_a_running_job(c, data, trained):
    """One trainer at a time: the second job waits in the queue. Each can be cancelled, and
    neither leaves a model."""
    running = start(c, data, job_name="cancelled-running", epochs=100)
    queued = start(c, data, job_name="cancelled-queued", epochs=100)
    assert queued["status"] == "queued", queued
    for job in (queued, running):
        wait(c, job["job_id"], statuses=("queued", "running"))
        r = c.post(f"{E}/jobs/{job['job_id']}/cancel")
        assert r.status_code == 200, r.text
        assert wait(c, job["job_id"])["status"] == "cancelled"
        assert c.get(f"/store/v1/models/{job['adapter_id']}").status_code == 404
        assert c.post(f"{E}/jobs/{job['job_id']}/cancel").status_code == 409
    assert c.get(f"{E}/jobs/nope").status_code == 404

