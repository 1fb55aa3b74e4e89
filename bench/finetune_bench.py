"""Fine-tuning benchmark (issue 24): our LoRA trainer against a plain peft script, and serving
with adapters against serving without.

1. Training steps per second: `python -m modelyard.server.finetune.trainer` (what a job runs)
   against a plain transformers + peft loop written as a user would (same GGUF base, same
   chat-template tokens, same LoRA targets, rank, alpha and layers, AdamW, the same batches in
   the same order, the same threads). Each side is a child process; its steps are timed by
   this process as their progress lines arrive, from the first step to the last (the start,
   imports and loading are left out: they are not per step). Target: ours >= 0.95x.
2. Decode tokens/s of one stream, on the base and with a LoRA adapter (rank 8 on the seven
   projections of the last 8 layers: the trainer's defaults) on a Modelyard server.
   Target: >= 0.9x.
3. Aggregate tokens/s of 8 concurrent streams: 4 on each of two adapters of one base, against
   8 on the base alone (a decode step carries one adapter set, so two sets take turns).

The machine is shared: every measurement notes the 1-minute load average, and the two sides of
each comparison run in interleaved rounds (rotated order), medians reported.

    .venv/bin/python bench/finetune_bench.py [--threads 2] [--rounds 3] [--epochs 4] [--tokens 64]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

import inference_bench as ib  # noqa: E402
import modelgen  # noqa: E402
from support.servers import free_port  # noqa: E402

from modelyard.server.finetune import lora_gguf  # noqa: E402

CACHE = ROOT / ".cache" / "bench" / "finetune"
# Trained: a llama of 4 layers, 256 wide (3.4M parameters), on gpt-2's first 2,000 tokens and
# ChatML's: a step takes about a second on this shared 2-core VM, so a run is minutes.
TRAIN_SHAPE = modelgen.LlamaShape(n_embd=256, n_layer=4, n_head=4, n_head_kv=2, n_ff=512)
SETTINGS = {"learning_rate": 1e-3, "batch_size": 4, "lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.0,
            "lora_layers": 4, "max_seq_length": 128, "seed": 1}

PLAIN_PEFT = r'''
import json, sys, time
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(spec["seed"])
folder, name = spec["base"].rsplit("/", 1)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
n = model.config.num_hidden_layers
model = get_peft_model(model, LoraConfig(
    r=spec["lora_rank"], lora_alpha=spec["lora_alpha"], lora_dropout=spec["lora_dropout"],
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    layers_to_transform=list(range(n - spec["lora_layers"], n)), task_type="CAUSAL_LM"))
rows = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=False)
        for line in open(spec["dataset"]) if line.strip()]
rows = [list(r["input_ids"]) if isinstance(r, dict) else list(r) for r in rows]
pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec["learning_rate"])
order = torch.Generator().manual_seed(spec["seed"])
model.train()
step = 0
for epoch in range(spec["epochs"]):
    perm = torch.randperm(len(rows), generator=order).tolist()
    for start in range(0, len(perm), spec["batch_size"]):
        batch = [rows[i] for i in perm[start:start + spec["batch_size"]]]
        width = max(map(len, batch))
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        print(json.dumps({"event": "step", "step": step, "loss": float(loss)}), flush=True)
'''


def load() -> float:
    return os.getloadavg()[0]


# ---- 1. training ------------------------------------------------------------------------

def training_inputs() -> tuple[Path, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    base = CACHE / "train-base.gguf"
    if not base.exists():
        vocab = modelgen.make_vocab_gguf(CACHE / "train-vocab.gguf", base="gpt-2", n_base=2000,
                                         extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
        modelgen.make_llama_gguf(base, vocab=vocab, seed=3, shape=TRAIN_SHAPE)
    data = CACHE / "train.jsonl"
    lines = []
    for i in range(16):  # lengths vary, as a real dataset's do
        question = f"What is {i} plus {i}? " + "Please explain the steps. " * (i % 4)
        answer = f"{i} plus {i} is {2 * i}. " + "Adding a number to itself doubles it. " * (i % 3)
        lines.append(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}))
    data.write_text("\n".join(lines) + "\n")
    return base, data


def steps_per_second(cmd: list[str], threads: int) -> tuple[float, int]:
    """Run a trainer child; its steps per second from the arrival of its first step line to its
    last, and the number of steps."""
    env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    times = []
    for line in child.stdout:
        if '"step"' in line:
            times.append(time.perf_counter())
    err = child.stderr.read()
    if child.wait() != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {err[-2000:]}")
    return (len(times) - 1) / (times[-1] - times[0]), len(times)


def bench_training(threads: int, rounds: int, epochs: int) -> dict:
    base, data = training_inputs()
    spec = {"base": str(base), "dataset": str(data), "threads": threads, "epochs": epochs, **SETTINGS}
    ours_spec, plain_spec = CACHE / "ours.json", CACHE / "plain.json"
    ours_spec.write_text(json.dumps({**spec, "output": str(CACHE / "adapter.gguf")}))
    plain_spec.write_text(json.dumps(spec))
    plain_script = CACHE / "plain_peft.py"
    plain_script.write_text(PLAIN_PEFT)
    sides = {
        "Modelyard's trainer": [sys.executable, "-m", "modelyard.server.finetune.trainer", str(ours_spec)],
        "plain peft script": [sys.executable, str(plain_script), str(plain_spec)],
    }
    out = {name: {"rate": [], "load": []} for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            before = load()
            rate, steps = steps_per_second(sides[name], threads)
            out[name]["rate"].append(rate)
            out[name]["load"].append((before + load()) / 2)
            out[name]["steps"] = steps
            print(f"  training, round {r + 1}: {name}: {rate:.2f} steps/s ({steps} steps), load {load():.1f}",
                  flush=True)
    return out


# ---- 2 and 3. serving ---------------------------------------------------------------------

def random_adapter(path: Path, seed: int) -> Path:
    """Rank 8 on the seven projections of SmolLM2-135M's last 8 layers (the trainer's defaults)."""
    s = modelgen.SMOLLM2_135M
    head = s.n_embd // s.n_head
    dims = {"self_attn.q_proj": (s.n_embd, s.n_embd), "self_attn.k_proj": (s.n_embd, head * s.n_head_kv),
            "self_attn.v_proj": (s.n_embd, head * s.n_head_kv), "self_attn.o_proj": (s.n_embd, s.n_embd),
            "mlp.gate_proj": (s.n_embd, s.n_ff), "mlp.up_proj": (s.n_embd, s.n_ff),
            "mlp.down_proj": (s.n_ff, s.n_embd)}
    rng = np.random.default_rng(seed)
    pairs = {}
    for layer in range(s.n_layer - 8, s.n_layer):
        for module, (n_in, n_out) in dims.items():
            pairs[f"base_model.model.model.layers.{layer}.{module}"] = (
                rng.standard_normal((8, n_in)).astype(np.float32) * 0.01,
                rng.standard_normal((n_out, 8)).astype(np.float32) * 0.01)
    return lora_gguf.write(path, pairs, "llama", s.n_head, s.n_head_kv, 16.0)


def start_server(llm: Path, threads: int, parallel: int) -> ib.Proc:
    """A fresh store: the base, and two adapters made by Ollama's create with `adapters`."""
    store = CACHE / "store"
    shutil.rmtree(store, ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "modelyard.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--store", str(store), "--threads", str(threads), "--parallel", str(parallel)]
    proc = ib.Proc("modelyard-finetune", cmd, url, "/healthz", env={"MODELYARD_API_KEY": ib.KEY})
    httpx.post(url + "/store/v1/models", headers=ib.auth(), json={
        "id": "bench-llm", "version": "1", "kind": "llm",
        "gguf": {"chatTemplateHint": "chatml", "initContextSize": ib.CTX}}).raise_for_status()
    with open(llm, "rb") as f:
        httpx.post(f"{url}/store/v1/models/bench-llm/upload", headers=ib.auth(),
                   files={"file": (llm.name, f)}, timeout=300).raise_for_status()
    for name, seed in (("lora-a", 1), ("lora-b", 2)):
        data = random_adapter(CACHE / f"{name}.gguf", seed).read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        httpx.post(f"{url}/api/blobs/{digest}", headers=ib.auth(), content=data).raise_for_status()
        httpx.post(f"{url}/api/create", headers=ib.auth(), timeout=120, json={
            "model": name, "from": "bench-llm", "adapters": {"a.gguf": digest}, "stream": False}).raise_for_status()
    httpx.post(f"{url}/v1/models", headers=ib.auth(), json={"model": "bench-llm"}, timeout=300).raise_for_status()
    return proc


def one_stream(url: str, model: str, tokens: int, bias: dict, i: int) -> dict:
    """One streamed /v1/completions (a raw prompt: no chat template, nothing held back): its
    tokens (the usage's count) and decode rate from the first text to the end."""
    body = {"model": model, "prompt": f"Story number {i}. Once upon a time, by the sea,", "max_tokens": tokens,
            "temperature": 0, "stream": True, "logit_bias": bias, "stream_options": {"include_usage": True}}
    first, n = None, 0
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=ib.auth(), timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
            if first is None and any(c.get("text") for c in chunk.get("choices") or []):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"tokens": n, "decode_tps": (n - 1) / (end - first)}


def streams(url: str, models: list[str], tokens: int, bias: dict) -> tuple[float, bool]:
    """One stream per entry of `models`, all at once: total tokens/s over the wall time."""
    return ib.at_once(lambda k: one_stream(url, models[k], tokens, bias, 200 + k), len(models), tokens)


def bench_serving(threads: int, rounds: int, tokens: int) -> dict:
    llm, _ = ib.models()
    bias = ib.eog_bias(llm)
    proc = start_server(llm, threads, parallel=8)
    cases = {
        "1 stream, base": ("single", ["bench-llm"]),
        "1 stream, adapter": ("single", ["lora-a"]),
        "8 streams, base": ("eight", ["bench-llm"] * 8),
        "8 streams, two adapters": ("eight", ["lora-a", "lora-b"] * 4),
    }
    out = {name: {"rate": [], "load": [], "whole": True} for name in cases}
    try:
        for model in ("bench-llm", "lora-a", "lora-b"):  # warm: each adapter read in once
            one_stream(proc.url, model, 4, bias, 0)
        for group in ("single", "eight"):
            names = [n for n, (g, _) in cases.items() if g == group]
            for r in range(rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    before = load()
                    models = cases[name][1]
                    if group == "single":
                        got = one_stream(proc.url, models[0], tokens, bias, r)
                        rate, whole = got["decode_tps"], got["tokens"] == tokens
                    else:
                        rate, whole = streams(proc.url, models, tokens, bias)
                    out[name]["rate"].append(rate)
                    out[name]["load"].append((before + load()) / 2)
                    out[name]["whole"] &= whole
                    print(f"  serving, round {r + 1}: {name}: {rate:.1f} tokens/s, load {load():.1f}", flush=True)
    finally:
        proc.stop()
    return out


def table(training: dict, serving: dict, args) -> str:
    def med(entry):
        return statistics.median(entry["rate"])

    def loads(entry):
        return f"{min(entry['load']):.1f}-{max(entry['load']):.1f}"

    lines = ["| measure | side | median | runs | load average (1 min) |", "|---|---|---|---|---|"]
    for name, entry in training.items():
        runs = ", ".join(f"{x:.2f}" for x in entry["rate"])
        lines.append(f"| training steps/s ({entry['steps']} steps) | {name} | {med(entry):.2f} | {runs} | {loads(entry)} |")
    for name, entry in serving.items():
        runs = ", ".join(f"{x:.1f}" for x in entry["rate"])
        whole = "" if entry["whole"] else " (streams cut short!)"
        lines.append(f"| decode tokens/s | {name}{whole} | {med(entry):.1f} | {runs} | {loads(entry)} |")
    names = list(training)
    ratios = [
        ("trainer / plain peft", med(training[names[0]]) / med(training[names[1]]), 0.95),
        ("1 stream: adapter / base", med(serving["1 stream, adapter"]) / med(serving["1 stream, base"]), 0.9),
        ("8 streams: two adapters / base", med(serving["8 streams, two adapters"]) / med(serving["8 streams, base"]),
         None),
    ]
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    lines += [f"| {name} | {value:.2f}x | {f'>= {target}x' if target else '-'} |" for name, value, target in ratios]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="of 16 examples in batches of 4: 4 steps each")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--skip", choices=("training", "serving"))
    args = parser.parse_args()
    print(f"threads {args.threads}, rounds {args.rounds}, load {load():.1f}", flush=True)
    training = bench_training(args.threads, args.rounds, args.epochs) if args.skip != "training" else {}
    serving = bench_serving(args.threads, args.rounds, args.tokens) if args.skip != "serving" else {}
    if training and serving:
        print(table(training, serving, args))
    else:
        print(json.dumps({"training": training, "serving": serving}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
