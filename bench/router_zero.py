"""`zero`: scale from zero, with a process-spawning stand-in for the cluster. The router's
scale-up starts a real `modelyard serve` (role `zero`, run_zero), which joins as a ready pod
once its /readyz answers; the first token through the router is set against the pod's own
start and load time, and against a fresh pod's first request, called directly.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx

from router_placement import chat_model, chat_turn
from router_stacks import free_port, model_m, ready_pod, real_server, start


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
    cluster.replace("models", [model_m(replicas=0)])
    cluster.replace("pods", [])
    folder = Path(workdir)
    # The pod's image and its cache volume: the store with the model, ready before the request.
    server = real_server(folder, parallel=4, model=chat_model(), context=8192, wait=False)

    async def scale(namespace: str, name: str) -> None:
        asyncio.get_running_loop().create_task(pod_comes_up())

    async def pod_comes_up() -> None:
        spawned = time.time()
        await asyncio.to_thread(server.start)  # returns once gunicorn listens, the model loading
        async with httpx.AsyncClient() as probe:
            while (await probe.get(server.url + "/readyz")).status_code != 200:
                await asyncio.sleep(0.05)
        ready = time.time()
        cluster.apply("pods", "ADDED", ready_pod("p0", f"127.0.0.1:{server.port}"))
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
    server = real_server(workdir, parallel=4, model=chat_model(), context=8192)
    ready = time.time()
    try:
        ttft, _, _, _ = asyncio.run(chat_turn(httpx.AsyncClient(timeout=600), server.url,
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
            front = start("zero", port, tmp)
            timing: dict = {}
            try:
                sent = time.time()
                ttft, _, _, _ = asyncio.run(chat_turn(httpx.AsyncClient(timeout=600), f"http://127.0.0.1:{port}",
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

