"""Where a single stream's time goes: llama.cpp's decode alone, against the same decode
while a server streams it, and the CPU each server's other threads spend per token.

On a machine whose cores all decode (threads = cores), every other thread that runs
takes a core from an OpenMP thread, and its partner waits at the next barrier: the
serving path's CPU per token costs several times its own length. This prints:

- the engine alone: ms per token of llama_decode on the bench model (one sequence, the
  engine's context settings), no server, no client;
- for Modelyard and llama-server, one after another, `--rounds` rounds of 3 streams of
  `--tokens` tokens each: tokens/s, and the CPU per token of every process of the server
  outside its two busiest (decoding) threads, by thread, from /proc (Linux only).

    .venv/bin/python bench/serving_cost.py [--threads 2] [--tokens 400] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import inference_bench as B  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PROMPT = "<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"


def engine_alone(llm: Path, threads: int, tokens: int, rounds: int) -> float:
    """Median ms per token of llama_decode, one token at a time, in the engine's context."""
    import llama_cpp as L

    from modelyard.server.inference.llama.model import LlamaModel
    from modelyard.server.inference.llama.scheduler import PRIORITY_SLOTS, _Batch

    model = LlamaModel(llm)
    n_seqs = 8 + PRIORITY_SLOTS
    p = L.llama_context_default_params()
    p.n_ctx, p.n_seq_max, p.kv_unified = B.CTX * n_seqs, n_seqs, False
    p.n_batch, p.n_ubatch, p.n_threads, p.n_threads_batch = 2048, 512, threads, threads
    ctx = L.llama_init_from_model(model.ptr, p)
    batch, prompt, runs = _Batch(64), model.tokenize(PROMPT, True), []
    try:
        for _ in range(rounds * 3):
            L.llama_memory_seq_rm(L.llama_get_memory(ctx), 0, -1, -1)
            batch.clear()
            batch.add(prompt, 0, 0, True)
            assert L.llama_decode(ctx, batch.c) == 0
            t0 = time.perf_counter()
            for i in range(tokens):
                batch.clear()
                batch.add([100 + i % 1000], len(prompt) + i, 0, True)
                assert L.llama_decode(ctx, batch.c) == 0
            runs.append((time.perf_counter() - t0) / tokens * 1000)
    finally:
        L.llama_free(ctx)
        model.close()
    return statistics.median(runs)


def _children(pid: int) -> list[int]:
    out = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out += _children(int(entry))
    return out


def _cpu_by_thread(root: int) -> dict[tuple, float]:
    """CPU seconds of every thread of the server's process tree, by (pid, tid, name)."""
    out = {}
    for pid in _children(root):
        try:
            name = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        name = "runner" if "llama.runner" in name else name.split()[0].rsplit("/", 1)[-1][:24]
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[(pid, int(tid), name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def serving(proc, bias: dict, tokens: int, rounds: int) -> tuple[float, list[tuple[float, str]]]:
    """tokens/s over the streams, and the CPU ms per token of each thread but the two
    that decode (the busiest two), largest first."""
    B.one_stream(proc.url, "bench-llm", 8, bias, 999)
    before, t0, n = _cpu_by_thread(proc.p.pid), time.monotonic(), 0
    for i in range(rounds * 3):
        n += B.one_stream(proc.url, "bench-llm", tokens, bias, i)["tokens"]
    wall, after = time.monotonic() - t0, _cpu_by_thread(proc.p.pid)
    used = sorted(((after[k] - before.get(k, 0.0)) * 1000 / n, f"{k[2]} {k[1]}") for k in after)
    others = [row for row in reversed(used[:-2]) if row[0] > 0]
    return n / wall, others


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    llm, emb = B.models()
    bias = B.eog_bias(llm)
    print(f"engine alone: {engine_alone(llm, args.threads, args.tokens, args.rounds):.2f} ms per token "
          f"(llama_decode, one sequence)")
    names = ["modelyard"]
    if B.LLAMA_SERVER.exists():
        names.append("llama-server")
    else:
        print(f"no {B.LLAMA_SERVER}: run tools/build_llama_server.sh first; skipping llama-server")
    # llama-server on the wheel's own libraries where they were copied (docs/benchmarks.md)
    libs = ROOT / ".cache" / "llama-server-wheel-libs"
    for name in names:
        if name == "modelyard":
            proc = B.start_modelyard(llm, emb, args.threads, 8)
        else:
            proc = B.start_llama_server(llm, args.threads, 8, False, libs=str(libs) if libs.is_dir() else None)
        try:
            rate, others = serving(proc, bias, args.tokens, args.rounds)
        finally:
            proc.stop()
        print(f"{name}: {rate:.1f} tok/s ({1000 / rate:.2f} ms per token); CPU per token outside the "
              f"decoding threads: {sum(ms for ms, _ in others):.3f} ms")
        for ms, thread in others[:6]:
            print(f"    {ms:.3f} ms  {thread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
