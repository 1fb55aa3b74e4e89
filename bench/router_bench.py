"""The router's HTTP stack, chosen by measurement: how many idle streams each stack holds,
and what a short request costs while they are held.

Three processes on loopback: a stand-in pod (an ASGI app under uvicorn: a `stream: true`
request gets an SSE comment every second until the client goes, any other request a small
JSON answer), and in front of it either
- `asgi`: the router itself (Falcon's ASGI app under uvicorn, aiohttp's client to the pod),
  with one Model whose one pod is the stand-in (no cluster: the state is fed directly), or
- `gthread`: the pods' own stack, gunicorn's gthread worker with 64 threads and a WSGI app
  that relays the pod's answer with httpx's Client, as a thread-per-request router would.
For each stack and each count of idle streams: how many opened within 10 s, then 20 short
requests one after another (their latency, and how many got no answer within 5 s), and the
front process's resident memory and threads.

    .venv/bin/python bench/router_bench.py idle [--streams 64 300]

`overhead`: a real `modelyard serve` (the tests' generated pod model: random weights,
qwen2's vocabulary; 8 decode slots) called directly and through the router, at 1, 8 and 64
concurrent streamed chat completions (64 tokens each, end-of-sequence biased away; at 64
most wait for a slot), in alternating rounds; a side's round is at least SAMPLES streams
(one stream alone: 24 one after another): time to first token (median) and tokens per
second per stream (median). The pod runs on all cores but the first, the router on the
first, as a router on a node of its own.

    .venv/bin/python bench/router_bench.py overhead [--rounds 3] [--streams 1 8 64]

`cache`: three real servers on loopback (a 20 M-parameter generated model, one llama.cpp
thread and a few slots each) behind the router, and many users at once, each with a long
system prompt of its own and several turns: mean time to first token when the router places
by CHWBL, by its least-loaded fallback alone, and by round robin (a balancer of this script's).

`zero`: scale from zero with a process-spawning stand-in for the cluster: the router's
scale-up starts a real `modelyard serve`, which joins as a ready pod once its /readyz answers;
the first token through the router against the pod's own start and load time (and against a
fresh pod's first request, called directly).

`all` (`make bench-router`): overhead, cache and zero, printed as the markdown of
docs/benchmarks.md with the machine's load average.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

GTHREAD_THREADS = 64
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the stand-in pod -------------------------------------------------------------------
async def pod_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    stream = b'"stream": true' in body or b'"stream":true' in body
    if not stream:
        data = b'{"object": "list", "data": [{"embedding": [0.1, 0.2]}]}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    gone = asyncio.ensure_future(receive())
    while not gone.done():
        await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        await asyncio.wait({gone}, timeout=1.0)


def run_pod(port: int) -> None:
    import uvicorn

    uvicorn.run(pod_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


# ---- the two fronts -----------------------------------------------------------------------
def _pod(name: str, address: str) -> dict:
    """A ready pod of Model m at `address` (host:port), as the router's pod watch sees it."""
    host, _, pod_port = address.partition(":")
    return {"metadata": {"name": name, "namespace": "b", "labels": {"app": "m"}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": int(pod_port)}]}]},
            "status": {"podIP": host, "conditions": [{"type": "Ready", "status": "True"}]}}


def _model(replicas: int = 1) -> dict:
    return {"metadata": {"name": "m", "namespace": "b", "generation": 1}, "spec": {"kind": "llm", "replicas": replicas},
            "status": {"phase": "Ready", "selector": "app=m"}}


PLACEMENTS = ("chwbl", "least-loaded", "round-robin")


def run_asgi(port: int, upstream: str, placement: str = "chwbl") -> None:
    """The router with Model m on the pods `upstream` names (comma-separated host:port); no
    cluster: the state is fed directly. `placement`: the router's own (CHWBL on conversations),
    its fallback alone (least-loaded: no conversation prefix), or round robin (the baseline: a
    balancer of this benchmark's that takes the pods in turn)."""
    from modelyard.server.router.balancer import Balancer
    from modelyard.server.router.cluster import Cluster
    from modelyard.server.router.main import run_on_loop, serve_app
    from modelyard.server.router.pods import Pods
    from modelyard.server.router.settings import RouterSettings

    class RoundRobin(Balancer):
        def pick(self, key, exclude=()):
            candidates = [e for e in self.endpoints if e not in set(exclude)]
            self._turn += 1
            return candidates[self._turn % len(candidates)] if candidates else None

    cluster = Cluster(256, 1.25)
    cluster.replace("models", [_model()])
    if placement == "round-robin":
        for entry in cluster.models.values():
            entry.balancer = RoundRobin()
    cluster.replace("pods", [_pod(f"p{i}", a) for i, a in enumerate(upstream.split(","))])
    prefix_chars = 0 if placement == "least-loaded" else 4096

    async def no_scale(namespace: str, name: str) -> None:
        raise RuntimeError("not in a cluster")

    async def main() -> None:
        async with Pods() as pods:
            await serve_app(RouterSettings(host="127.0.0.1", port=port, prefix_chars=prefix_chars), cluster, pods,
                            no_scale)

    run_on_loop(main())


def run_gthread(port: int, upstream: str) -> None:
    from gunicorn.app.base import BaseApplication

    pods = httpx.Client(timeout=httpx.Timeout(None, connect=5.0), limits=httpx.Limits(max_connections=None))

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        request = pods.build_request(environ["REQUEST_METHOD"], f"http://{upstream}{environ['PATH_INFO']}",
                                     content=body, headers={"content-type": "application/json"})
        response = pods.send(request, stream=True)
        start_response(f"{response.status_code} OK", [(k, v) for k, v in response.headers.items()
                                                      if k.lower() not in ("transfer-encoding", "connection")])

        def relay():
            try:
                yield from response.iter_raw()
            finally:
                response.close()
        return relay()

    class App(BaseApplication):
        def load_config(self):
            for k, v in {"bind": f"127.0.0.1:{port}", "worker_class": "gthread", "threads": GTHREAD_THREADS,
                         "workers": 1, "loglevel": "warning", "timeout": 0}.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    App().run()


# ---- the measurement ------------------------------------------------------------------
def _start(role: str, port: int, upstream: str = "", *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "serve", role, str(port), upstream, *extra])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{role} did not start")


def _memory(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a process and its children (gunicorn's worker)."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    rss, threads = 0.0, 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return rss, threads


async def _measure(url: str, streams: int) -> dict:
    opened = 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=limits) as client:
        held: list = []

        async def open_one() -> None:
            nonlocal opened
            request = client.build_request("POST", url + "/v1/chat/completions",
                                           json={"model": "m", "stream": True, "messages": []})
            try:
                response = await client.send(request, stream=True)
                chunks = response.aiter_raw()
                held.append((response, chunks))  # an iterator let go would close its stream
                await chunks.__anext__()
                opened += 1
            except (httpx.HTTPError, StopAsyncIteration):
                pass

        if streams:
            await asyncio.wait([asyncio.ensure_future(open_one()) for _ in range(streams)], timeout=10)
        times, failed = [], 0
        for _ in range(20):
            started = time.perf_counter()
            try:
                r = await client.post(url + "/v1/embeddings", json={"model": "m", "input": "x"}, timeout=5)
                r.raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
            except httpx.HTTPError:
                failed += 1
        for response, _ in held:
            await response.aclose()
    return {"opened": opened, "short_p50_ms": round(statistics.median(times), 2) if times else None,
            "short_max_ms": round(max(times), 2) if times else None, "short_failed": failed}


def idle(stream_counts: list[int]) -> list[dict]:
    pod_port = free_port()
    pod = _start("pod", pod_port)
    results = []
    try:
        for stack in ("asgi", "gthread"):
            for count in stream_counts:
                port = free_port()
                front = _start(stack, port, f"127.0.0.1:{pod_port}")
                try:
                    row = asyncio.run(_measure(f"http://127.0.0.1:{port}", count))
                    rss, threads = _memory(front.pid)
                    row.update(stack=stack, streams=count, front_rss_mb=round(rss, 1), front_threads=threads)
                    results.append(row)
                    print(json.dumps(row), flush=True)
                finally:
                    front.kill()
                    front.wait()
    finally:
        pod.kill()
        pod.wait()
    return results


# ---- router overhead against a real server -------------------------------------------------
NO_EOS = {"151643": -100, "151645": -100}  # qwen2's end tokens (tests/cluster/podservers.py)


def _real_server(workdir: Path, parallel: int, model: Path | None = None, context: int = 2048,
                 threads: int | None = None, wait: bool = True):
    """A real `modelyard serve` of `model` (default: the tests' pod model) as m, in a store of its own."""
    from cluster.podservers import make_pod_model
    from support.servers import Server

    from modelyard.server.registry.store import Store

    store = workdir / "store"
    Store(store).register_path("m", model or make_pod_model(), kind="llm",
                               fields={"version": "1.0.0", "gguf": {"initContextSize": context}})
    args = ("--preload", "m", "--parallel", str(parallel), *(("--threads", str(threads)) if threads else ()))
    server = Server(store, args=args, log_path=workdir / "server.log")
    return server.start(wait_ready=True, timeout=300) if wait else server


async def _streams(url: str, count: int, batches: int = 1) -> tuple[float, float]:
    """(median time to first token in ms, median tokens per second per stream) of `batches`
    batches of `count` streams at once, one batch after another on one client (aiohttp's: it
    takes less of the core it shares with the router than httpx's)."""
    import aiohttp

    body = {"model": "m", "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 64,
            "stream": True, "logit_bias": NO_EOS}
    # Idle connections are dropped before the servers drop them (gunicorn and uvicorn after 5 s),
    # or a batch could start on a connection that is being closed.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
    async with aiohttp.ClientSession(connector=connector) as client:
        async def one() -> tuple[float, float]:
            started = time.perf_counter()
            first, tokens = None, 0
            async with client.post(url + "/v1/chat/completions", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        tokens += 1
                        first = first or time.perf_counter()
            end = time.perf_counter()
            return (first - started) * 1000, (tokens - 1) / max(end - first, 1e-9)
        results = []
        for _ in range(batches):
            results += await asyncio.gather(*[one() for _ in range(count)])
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


SAMPLES = 24  # streams a side measures per round at least: one stream alone is 24 in a row


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process and of its children to `cpus` (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)
        for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
            _pin(int(child), cpus)


def overhead(rounds: int, stream_counts: list[int]) -> list[dict]:
    """On a cluster the router runs on a node of its own. Here the pod (gunicorn, its runner,
    llama.cpp's threads) is pinned to every core but the first, and the router to the first
    (this client runs where the scheduler puts it, as for the pod called directly): on shared
    cores the processes take turns, and what the router seemed to add was the machine's
    contention (docs/benchmarks.md, "Router")."""
    import tempfile

    rows = []
    cores = sorted(os.sched_getaffinity(0))
    front_cores, pod_cores = {cores[0]}, set(cores[1:]) or {cores[0]}
    with tempfile.TemporaryDirectory() as tmp:
        server = _real_server(Path(tmp), parallel=8, threads=len(pod_cores))  # 2048 tokens: 256 per slot
        port = free_port()
        front = _start("asgi", port, f"127.0.0.1:{server.port}")
        _pin(server.proc.pid, pod_cores)
        _pin(front.pid, front_cores)
        try:
            asyncio.run(_streams(server.url, 1))  # warm-up: the first request pays one-off costs
            for count in stream_counts:
                samples: dict[str, list[tuple[float, float]]] = {"direct": [], "router": []}
                for _ in range(rounds):
                    for name, url in (("direct", server.url), ("router", f"http://127.0.0.1:{port}")):
                        samples[name].append(asyncio.run(_streams(url, count, batches=max(2, SAMPLES // count))))
                row = {"streams": count}
                for name, values in samples.items():
                    row[f"{name}_ttft_ms"] = round(statistics.median(v[0] for v in values), 1)
                    row[f"{name}_tok_s"] = round(statistics.median(v[1] for v in values), 1)
                row["ttft_added_ms"] = round(row["router_ttft_ms"] - row["direct_ttft_ms"], 1)
                row["tok_s_ratio"] = round(row["router_tok_s"] / row["direct_tok_s"], 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            front.kill()
            front.wait()
            server.stop()
    return rows


# ---- cache-aware placement against cache-unaware -------------------------------------------
# A model big enough that a long prompt costs real time to evaluate (random weights, qwen2's
# vocabulary and chat template): 12 layers of 384, about 20 M parameters besides the embedding.
CHAT_SHAPE = {"n_embd": 384, "n_layer": 12, "n_head": 6, "n_head_kv": 2, "n_ff": 1024, "n_ctx_train": 8192,
              "tied": True}
# More users than a pod has slots, fewer than three pods have: where a conversation goes decides
# whether its prefix is still in a slot.
USERS, TURNS, SYSTEM_WORDS, SLOTS = 16, 6, 160, 8


def chat_model() -> Path:
    """The benchmark's chat model, made once and kept under MODELYARD_CACHE/test-models."""
    import hashlib

    from inference import modelgen

    cache = Path(os.environ.get("MODELYARD_CACHE") or Path.home() / ".cache" / "modelyard") / "test-models"
    digest = hashlib.sha256(Path(modelgen.__file__).read_bytes() + repr(CHAT_SHAPE).encode()).hexdigest()[:12]
    path = cache / f"router-bench-qwen2-384x12-q8_0-{digest}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{path.name}.{os.getpid()}.part"
        modelgen.make_llama_gguf(partial, vocab="qwen2", shape=modelgen.LlamaShape(**CHAT_SHAPE), qtype="Q8_0")
        os.replace(partial, path)
    return path


def _system_prompt(rng) -> str:
    """A user's own long system prompt: made-up words, so no two users share a prefix."""
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vu", "pel", "dri", "on", "sha", "quo", "ber", "ti"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(SYSTEM_WORDS)]
    return "You are a helpful assistant. Your notes: " + " ".join(words) + "."


async def _chat_turn(client: httpx.AsyncClient, url: str, messages: list) -> tuple[float, str, int, int]:
    """One streamed turn: (ms to the first text, the answer, prompt tokens, cached prompt tokens)."""
    body = {"model": "m", "messages": messages, "max_tokens": 8, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": NO_EOS}
    started, first, text, usage = time.perf_counter(), None, [], {}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
    ttft = ((first or time.perf_counter()) - started) * 1000
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return ttft, "".join(text), usage.get("prompt_tokens", 0), cached


async def _conversations(url: str, seed: int) -> list[tuple[float, int, int]]:
    """USERS conversations at once, each TURNS turns one after another."""
    import random

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as client:
        async def user(i: int) -> list[tuple[float, int, int]]:
            rng = random.Random(seed * 1000 + i)
            messages = [{"role": "system", "content": _system_prompt(rng)}]
            out = []
            for turn in range(TURNS):
                messages.append({"role": "user", "content": f"Question {turn + 1}: what comes next?"})
                ttft, answer, prompt, cached = await _chat_turn(client, url, messages)
                messages.append({"role": "assistant", "content": answer})
                out.append((ttft, prompt, cached))
            return out
        per_user = await asyncio.gather(*[user(i) for i in range(USERS)])
    return [turn for turns in per_user for turn in turns]


def cache_aware() -> list[dict]:
    """Three real servers (one llama.cpp thread each, SLOTS slots), the router in front, placing by
    CHWBL or least-loaded (cache-unaware: in turn among equally loaded pods)."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = chat_model()
        servers = []
        try:
            for i in range(3):
                (Path(tmp) / f"pod{i}").mkdir()
                servers.append(_real_server(Path(tmp) / f"pod{i}", parallel=SLOTS, model=model, context=8192,
                                            threads=1))
            upstream = ",".join(f"127.0.0.1:{s.port}" for s in servers)
            for server in servers:  # the first request of a server pays one-off costs
                asyncio.run(_chat_turn(httpx.AsyncClient(timeout=600), server.url,
                                       [{"role": "user", "content": "warm up"}]))
            for seed, placement in enumerate(("round-robin", "least-loaded", "chwbl")):
                port = free_port()
                front = _start("asgi", port, upstream, "--placement", placement)
                try:
                    turns = asyncio.run(_conversations(f"http://127.0.0.1:{port}", seed + 1))
                finally:
                    front.kill()
                    front.wait()
                ttfts = [t[0] for t in turns]
                first = [t[0] for i, t in enumerate(turns) if not i % TURNS]
                later = [t[0] for i, t in enumerate(turns) if i % TURNS]
                row = {"placement": placement, "requests": len(turns), "mean_ttft_ms": round(statistics.mean(ttfts), 1),
                       "p50_ttft_ms": round(statistics.median(ttfts), 1),
                       "first_turns_mean_ttft_ms": round(statistics.mean(first), 1),
                       "later_turns_mean_ttft_ms": round(statistics.mean(later), 1),
                       "prompt_tokens": sum(t[1] for t in turns), "cached_tokens": sum(t[2] for t in turns)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for server in servers:
                server.stop()
    return rows


# ---- scale from zero -------------------------------------------------------------------------
def run_zero(port: int, workdir: str) -> None:
    """The router with Model m at zero replicas; its scale-up starts a real `modelyard serve` (a
    process-spawning stand-in for the kubelet), whose pod becomes Ready when /readyz answers
    200 (polled every 50 ms, as a readiness probe with a short period). The times go to
    workdir/zero.json."""
    from modelyard.server.router.cluster import Cluster
    from modelyard.server.router.main import run_on_loop, serve_app
    from modelyard.server.router.pods import Pods
    from modelyard.server.router.settings import RouterSettings

    cluster = Cluster(256, 1.25)
    cluster.replace("models", [_model(replicas=0)])
    cluster.replace("pods", [])
    folder = Path(workdir)
    # The pod's image and its cache volume: the store with the model, ready before the request.
    server = _real_server(folder, parallel=4, model=chat_model(), context=8192, wait=False)

    async def scale(namespace: str, name: str) -> None:
        asyncio.get_running_loop().create_task(pod_comes_up())

    async def pod_comes_up() -> None:
        spawned = time.time()
        await asyncio.to_thread(server.start)  # returns once gunicorn listens, the model loading
        async with httpx.AsyncClient() as probe:
            while (await probe.get(server.url + "/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
        ready = time.time()
        cluster.apply("pods", "ADDED", _pod("p0", f"127.0.0.1:{server.port}"))
        (folder / "zero.json").write_text(json.dumps({"spawned": spawned, "ready": ready, "pgid": server.proc.pid}))

    async def main() -> None:
        async with Pods() as pods:
            await serve_app(RouterSettings(host="127.0.0.1", port=port, ping_seconds=1.0), cluster, pods, scale)

    run_on_loop(main())


def _fresh_pod_first_token(workdir: Path) -> tuple[float, float]:
    """(start + load, time to the first token of its first request) of a new server called
    directly: what a pod costs before any router is involved."""
    workdir.mkdir()
    spawned = time.time()
    server = _real_server(workdir, parallel=4, model=chat_model(), context=8192)
    ready = time.time()
    try:
        ttft, _, _, _ = asyncio.run(_chat_turn(httpx.AsyncClient(timeout=600), server.url,
                                               [{"role": "user", "content": "Wake up."}]))
    finally:
        server.stop()
    return ready - spawned, ttft / 1000


def scale_from_zero(runs: int = 3) -> list[dict]:
    import signal
    import tempfile

    rows = []
    chat_model()
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            direct_load, direct_first = _fresh_pod_first_token(Path(tmp) / "direct")
            port = free_port()
            front = _start("zero", port, tmp)
            timing: dict = {}
            try:
                sent = time.time()
                ttft, _, _, _ = asyncio.run(_chat_turn(httpx.AsyncClient(timeout=600), f"http://127.0.0.1:{port}",
                                                       [{"role": "user", "content": "Wake up."}]))
                answered = sent + ttft / 1000
                timing = json.loads((Path(tmp) / "zero.json").read_text())
            finally:
                front.kill()
                front.wait()
                if timing.get("pgid"):
                    os.killpg(timing["pgid"], signal.SIGTERM)
            start_load = timing["ready"] - timing["spawned"]
            row = {"direct_start_and_load_s": round(direct_load, 2), "direct_first_token_s": round(direct_first, 2),
                   "pod_start_and_load_s": round(start_load, 2), "first_token_s": round(answered - sent, 2),
                   "beyond_start_and_load_s": round(answered - sent - start_load, 2),
                   # What the router adds: beyond the pod's start, load and own first request.
                   "router_adds_s": round(answered - sent - start_load - direct_first, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# ---- all of it, as markdown -------------------------------------------------------------------
def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def everything(rounds: int) -> str:
    import datetime

    load_before = os.getloadavg()
    over = overhead(rounds, [1, 8, 64])
    cache = cache_aware()
    zero = scale_from_zero()
    load_after = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    by = {row["placement"]: row for row in cache}
    ratio = by["round-robin"]["mean_ttft_ms"] / by["chwbl"]["mean_ttft_ms"]
    return "\n\n".join([
        f"`make bench-router` ({when}, {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after)",
        "Router overhead, a real server called directly and through the router (streamed chat, 64 tokens, "
        f"median of {rounds} alternating rounds of at least {SAMPLES} streams a side):",
        _table(over, [("streams", "streams"), ("direct_ttft_ms", "TTFT direct (ms)"),
                      ("router_ttft_ms", "TTFT via router (ms)"), ("ttft_added_ms", "added (ms)"),
                      ("direct_tok_s", "tok/s direct"), ("router_tok_s", "tok/s via router"),
                      ("tok_s_ratio", "ratio")]),
        f"Placement on 3 replicas (real servers, {SLOTS} slots and one llama.cpp thread each, a 20 M-parameter "
        f"model; {USERS} users at once, each with its own ~{SYSTEM_WORDS}-word system prompt, {TURNS} turns "
        "each, 8 tokens an answer):",
        _table(cache, [("placement", "placement"), ("requests", "requests"), ("mean_ttft_ms", "mean TTFT (ms)"),
                       ("p50_ttft_ms", "p50 (ms)"), ("first_turns_mean_ttft_ms", "first turns mean (ms)"),
                       ("later_turns_mean_ttft_ms", "turns 2+ mean (ms)"),
                       ("prompt_tokens", "prompt tokens"), ("cached_tokens", "from the cache")]),
        f"Mean TTFT, round robin / CHWBL: {ratio:.2f}x over all turns, "
        f"{by['round-robin']['later_turns_mean_ttft_ms'] / by['chwbl']['later_turns_mean_ttft_ms']:.2f}x over turns 2+.",
        "Scale from zero (process-spawning stand-in: the scale-up starts a real `modelyard serve`, Ready "
        "on /readyz polled every 50 ms):",
        _table(zero, [("direct_start_and_load_s", "a pod alone: start + load (s)"),
                      ("direct_first_token_s", "its first request's first token (s)"),
                      ("pod_start_and_load_s", "woken pod: start + load (s)"),
                      ("first_token_s", "first token via router (s)"),
                      ("beyond_start_and_load_s", "beyond start + load (s)"),
                      ("router_adds_s", "beyond that and a first request (s)")]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("idle", help="idle streams each stack holds")
    p.add_argument("--streams", type=int, nargs="+", default=[64, 300])
    o = sub.add_parser("overhead", help="through the router against direct, on a real server")
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--streams", type=int, nargs="+", default=[1, 8, 64])
    sub.add_parser("cache", help="CHWBL against least-loaded and round robin on 3 real servers")
    sub.add_parser("zero", help="scale from zero with a process-spawning stand-in")
    a = sub.add_parser("all", help="overhead, cache and zero, printed as markdown for docs/benchmarks.md")
    a.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("serve", help="(internal) one of the processes")
    s.add_argument("role", choices=["pod", "asgi", "gthread", "zero"])
    s.add_argument("port", type=int)
    s.add_argument("upstream", nargs="?", default="")
    s.add_argument("--placement", choices=PLACEMENTS, default="chwbl")
    args = parser.parse_args(argv)
    if args.command == "serve":
        {"pod": lambda: run_pod(args.port),
         "asgi": lambda: run_asgi(args.port, args.upstream, args.placement),
         "gthread": lambda: run_gthread(args.port, args.upstream),
         "zero": lambda: run_zero(args.port, args.upstream)}[args.role]()
        return 0
    if args.command == "overhead":
        overhead(args.rounds, args.streams)
        return 0
    if args.command == "cache":
        cache_aware()
        return 0
    if args.command == "zero":
        scale_from_zero()
        return 0
    if args.command == "all":
        print(everything(args.rounds))
        return 0
    idle(args.streams)
    return 0


if __name__ == "__main__":
    sys.exit(main())
