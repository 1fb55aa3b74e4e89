"""The router's HTTP stack, chosen by measurement: how many idle streams each stack holds,
and what a short request costs while they are held.

Three processes on loopback: a stand-in pod (an ASGI app under uvicorn: a `stream: true`
request gets an SSE comment every second until the client goes, any other request a small
JSON answer), and in front of it either
- `asgi`: the router itself (Falcon's ASGI app under uvicorn, httpx's AsyncClient to the pod),
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
most wait for a slot), in alternating rounds: time to first token (median) and tokens per
second per stream (median).

    .venv/bin/python bench/router_bench.py overhead [--rounds 3] [--streams 1 8 64]
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
def run_asgi(port: int, upstream: str) -> None:
    from modelyard.server.router.cluster import Cluster
    from modelyard.server.router.main import client, serve_app
    from modelyard.server.router.settings import RouterSettings

    cluster = Cluster(256, 1.25)
    cluster.replace("models", [{"metadata": {"name": "m", "namespace": "b"}, "spec": {"kind": "llm"},
                                "status": {"phase": "Ready", "selector": "app=m"}}])
    host, _, pod_port = upstream.partition(":")
    cluster.replace("pods", [{"metadata": {"name": "p", "namespace": "b", "labels": {"app": "m"}},
                              "spec": {"containers": [{"ports": [{"name": "http", "containerPort": int(pod_port)}]}]},
                              "status": {"podIP": host, "conditions": [{"type": "Ready", "status": "True"}]}}])

    async def no_scale(namespace: str, name: str) -> None:
        raise RuntimeError("not in a cluster")

    async def main() -> None:
        async with client() as pods:
            await serve_app(RouterSettings(host="127.0.0.1", port=port), cluster, pods, no_scale)

    asyncio.run(main())


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
def _start(role: str, port: int, upstream: str = "") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "serve", role, str(port), upstream])
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


def _real_server(workdir: Path, parallel: int):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from cluster.podservers import make_pod_model
    from support.servers import Server

    from modelyard.server.registry.store import Store

    store = workdir / "store"
    Store(store).register_path("m", make_pod_model(workdir / "model"), kind="llm",
                               fields={"version": "1.0.0", "gguf": {"initContextSize": 2048}})
    return Server(store, args=("--preload", "m", "--parallel", str(parallel)),
                  log_path=workdir / "server.log").start(wait_ready=True, timeout=300)


async def _streams(url: str, count: int) -> tuple[float, float]:
    """(median time to first token in ms, median tokens per second per stream)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "Tell a story."}], "max_tokens": 64,
            "stream": True, "logit_bias": NO_EOS}
    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def one() -> tuple[float, float]:
            started = time.perf_counter()
            first, tokens = None, 0
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        tokens += 1
                        first = first or time.perf_counter()
            end = time.perf_counter()
            return (first - started) * 1000, (tokens - 1) / max(end - first, 1e-9)
        results = await asyncio.gather(*[one() for _ in range(count)])
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def overhead(rounds: int, stream_counts: list[int]) -> list[dict]:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = _real_server(Path(tmp), parallel=8)  # the model's 2048 tokens: 256 per slot
        port = free_port()
        front = _start("asgi", port, f"127.0.0.1:{server.port}")
        try:
            asyncio.run(_streams(server.url, 1))  # warm-up: the first request pays one-off costs
            for count in stream_counts:
                samples: dict[str, list[tuple[float, float]]] = {"direct": [], "router": []}
                for _ in range(rounds):
                    for name, url in (("direct", server.url), ("router", f"http://127.0.0.1:{port}")):
                        samples[name].append(asyncio.run(_streams(url, count)))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("idle", help="idle streams each stack holds")
    p.add_argument("--streams", type=int, nargs="+", default=[64, 300])
    o = sub.add_parser("overhead", help="through the router against direct, on a real server")
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--streams", type=int, nargs="+", default=[1, 8, 64])
    s = sub.add_parser("serve", help="(internal) one of the processes")
    s.add_argument("role", choices=["pod", "asgi", "gthread"])
    s.add_argument("port", type=int)
    s.add_argument("upstream", nargs="?", default="")
    args = parser.parse_args(argv)
    if args.command == "serve":
        {"pod": lambda: run_pod(args.port), "asgi": lambda: run_asgi(args.port, args.upstream),
         "gthread": lambda: run_gthread(args.port, args.upstream)}[args.role]()
        return 0
    if args.command == "overhead":
        overhead(args.rounds, args.streams)
        return 0
    idle(args.streams)
    return 0


if __name__ == "__main__":
    sys.exit(main())
