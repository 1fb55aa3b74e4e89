"""The processes the router benchmarks start, and the `idle` measurement (which HTTP stack the
router runs on; bench/router_bench.py's notes say what it measures).

- the stand-in pod: an ASGI app under uvicorn (a `stream: true` request gets an SSE comment
  every second until the client goes, any other request a small JSON answer);
- the two fronts: `asgi`, the router itself with one Model m on the pods it is given (no
  cluster: the state is fed directly; placed by CHWBL, least-loaded or round robin), and
  `gthread`, gunicorn's gthread worker relaying to the pod with httpx's Client;
- a real `modelyard serve` of a model, in a store of its own.

`start` runs a role in a child process: bench/router_bench.py re-run as `serve <role>`.
"""
from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

GTHREAD_THREADS = 64
ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "bench" / "router_bench.py"  # its `serve` command runs every role start() names
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
def ready_pod(name: str, address: str) -> dict:
    """A ready pod of Model m at `address` (host:port), as the router's pod watch sees it."""
    host, _, pod_port = address.partition(":")
    return {"metadata": {"name": name, "namespace": "b", "labels": {"app": "m"}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": int(pod_port)}]}]},
            "status": {"podIP": host, "conditions": [{"type": "Ready", "status": "True"}]}}


def model_m(replicas: int = 1) -> dict:
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
    cluster.replace("models", [model_m()])
    if placement == "round-robin":
        for entry in cluster.models.values():
            entry.balancer = RoundRobin()
    cluster.replace("pods", [ready_pod(f"p{i}", a) for i, a in enumerate(upstream.split(","))])
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


# ---- starting a role, and the idle measurement --------------------------------------------
def start(role: str, port: int, upstream: str = "", *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(ENTRY), "serve", role, str(port), upstream, *extra])
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
    pod = start("pod", pod_port)
    results = []
    try:
        for stack in ("asgi", "gthread"):
            for count in stream_counts:
                port = free_port()
                front = start(stack, port, f"127.0.0.1:{pod_port}")
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


# ---- a real server --------------------------------------------------------------------------
NO_EOS = {"151643": -100, "151645": -100}  # qwen2's end tokens (tests/cluster/podservers.py)


def real_server(workdir: Path, parallel: int, model: Path | None = None, context: int = 2048,
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
