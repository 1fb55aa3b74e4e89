"""What leaving ggml's AMX kernels out costs or saves: llama.cpp with and without them.

The same llama.cpp source (llama-cpp-python's sdist) in up to three builds, each driven
through llama-cpp-python's low-level API in a process of its own (LLAMA_CPP_LIB_PATH
picks the build):
- no-amx: the wheel that `make` installs (-march=native -mno-amx-*), the venv's own;
- amx: -march=native as is, which turns on ggml's AMX kernels on this CPU;
- amx-fixed (optional): the same, with ldtilecfg given its whole 64-byte operand, so
  the tile configuration reaches the CPU (docs/engines.md).
Models: SmolLM2-135M's shape with the real starcoder vocabulary and random weights, in
Q8_0 (the gguf package) and Q4_K_M (llama.cpp's quantizer from an F16 file). Measured:
prompt processing (one 128-token batch) and generation (64 single-token steps), 2
threads, in interleaved rounds; medians. A build that dies is reported with its signal.

    .venv/bin/python bench/amx_bench.py --lib amx=PATH [--lib amx-fixed=PATH] [--rounds 5]

Build the AMX variants with cmake from the sdist (-DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON,
target llama); see docs/engines.md.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

CACHE = ROOT / ".cache" / "bench-amx"

# Runs in the child: one build, one model, one round.
CHILD = r"""
import json, sys, time
import numpy as np
import llama_cpp as L
path, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
quiet = L.llama_log_callback(lambda *a: None)  # kept referenced: llama.cpp calls it later
L.llama_log_set(quiet, None)
L.llama_backend_init()
info = L.llama_print_system_info().decode()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
cp = L.llama_context_default_params()
cp.n_ctx = cp.n_batch = cp.n_ubatch = 512
cp.n_threads = cp.n_threads_batch = threads
ctx = L.llama_init_from_model(model, cp)
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

def decode(tokens):
    arr = (L.llama_token * len(tokens))(*tokens)
    assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens))) == 0
    return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).argmax())

decode([1, 2, 3, 4])  # warm-up: first-touch of weights, thread pool
L.llama_memory_clear(L.llama_get_memory(ctx), True)
prompt = [(i * 7919) % n_vocab for i in range(1, n_prompt + 1)]
t = time.perf_counter(); tok = decode(prompt); pp = time.perf_counter() - t
out = [tok]
t = time.perf_counter()
for _ in range(n_gen):
    tok = decode([tok]); out.append(tok)
tg = time.perf_counter() - t
print(json.dumps({"pp": n_prompt / pp, "tg": n_gen / tg, "tokens": out, "amx": "AMX_INT8 = 1" in info}))
"""


def models() -> dict[str, Path]:
    import modelgen

    CACHE.mkdir(parents=True, exist_ok=True)
    q8 = CACHE / "smollm2-135m-shape-q8_0.gguf"
    if not q8.exists():
        modelgen.make_llama_gguf(q8, vocab="starcoder", shape=modelgen.SMOLLM2_135M, chat_template=None,
                                 qtype="Q8_0")
    q4 = CACHE / "smollm2-135m-shape-q4_k_m.gguf"
    if not q4.exists():
        modelgen.make_quantized_llama_gguf(q4, "Q4_K_M", vocab="starcoder", shape=modelgen.SMOLLM2_135M,
                                           chat_template=None)
    return {"Q8_0": q8, "Q4_K_M": q4}


def run(lib: Path | None, model: Path, args) -> dict:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    if lib is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(lib)
        env["LD_LIBRARY_PATH"] = str(lib)  # ahead of the libraries' own RUNPATH
    p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(args.prompt), str(args.gen),
                        str(args.threads)], env=env, capture_output=True, text=True, timeout=600)
    if p.returncode < 0:
        return {"died": signal.Signals(-p.returncode).name}
    if p.returncode != 0:
        return {"died": f"exit {p.returncode}: {p.stderr[-500:]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", action="append", default=[], help="NAME=DIR of a llama.cpp build's libraries")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    builds: dict[str, Path | None] = {"no-amx": None}
    for spec in args.lib:
        name, _, path = spec.partition("=")
        builds[name] = Path(path)
    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for qtype, model in models().items():
            names = list(builds)
            names = names[r % len(names):] + names[: r % len(names)]  # rotate the order per round
            for name in names:
                results.setdefault((qtype, name), []).append(run(builds[name], model, args))
    print(f"| model | build | AMX in use | prompt tok/s ({args.prompt}) | generation tok/s ({args.gen}) "
          f"| same greedy tokens as no-amx |")
    print("|---|---|---|---|---|---|")
    for (qtype, name), rs in results.items():
        died = [x["died"] for x in rs if "died" in x]
        if died:
            print(f"| {qtype} | {name} | - | died: {died[0]} ({len(died)}/{len(rs)} runs) | - | - |")
            continue
        ref = results[(qtype, "no-amx")][0].get("tokens")
        pp = statistics.median(x["pp"] for x in rs)
        tg = statistics.median(x["tg"] for x in rs)
        same = all(x["tokens"] == ref for x in rs)
        print(f"| {qtype} | {name} | {'yes' if rs[0]['amx'] else 'no'} | {pp:.0f} | {tg:.1f} | "
              f"{'yes' if same else 'no'} |")
    for (qtype, name), rs in results.items():
        if all("pp" in x for x in rs):
            print(f"{qtype} {name} rounds: pp " + ", ".join(f"{x['pp']:.0f}" for x in rs)
                  + "; tg " + ", ".join(f"{x['tg']:.1f}" for x in rs))


if __name__ == "__main__":
    main()
