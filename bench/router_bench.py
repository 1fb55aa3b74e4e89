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

`cost`: the router's own CPU time a request (from /proc), bursts of 64 short requests at once
through it to the stand-in pod, which answers at once: what one router core carries, and how
long a burst keeps it busy.

    .venv/bin/python bench/router_bench.py cost [--burst 64]

`cache`: three real servers on loopback (a 20 M-parameter generated model, one llama.cpp
thread and a few slots each) behind the router, and many users, each with a long system
prompt of its own and several turns, all at once and then joining one after another: mean
time to first token when the router places by CHWBL, by its least-loaded fallback alone, and
by round robin (a balancer of this script's).

`zero`: scale from zero with a process-spawning stand-in for the cluster: the router's
scale-up starts a real `modelyard serve`, which joins as a ready pod once its /readyz answers;
the first token through the router against the pod's own start and load time (and against a
fresh pod's first request, called directly).

`all` (`make bench-router`): overhead, cost, cache and zero, printed as the markdown of
docs/benchmarks.md with the machine's load average.

The parts, one job each: router_stacks.py (the stand-in pod, the fronts, a real server, starting
them, and `idle`), router_placement.py (`cache`), router_zero.py (`zero`); this file: `overhead`,
`all`, and the command line, whose `serve` runs each role the others start in a child process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the parts beside this file

from router_placement import ARRIVALS, SLOTS, SYSTEM_WORDS, TURNS, USERS, cache_aware  # noqa: E402
from router_stacks import (  # noqa: E402
    NO_EOS,
    PLACEMENTS,
    free_port,
    idle,
    real_server,
    run_asgi,
    run_gthread,
    run_pod,
    start,
)
from router_zero import run_zero, scale_from_zero  # noqa: E402


# ---- router overhead against a real server -------------------------------------------------
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
        server = real_server(Path(tmp), parallel=8, threads=len(pod_cores))  # 2048 tokens: 256 per slot
        port = free_port()
        front = start("asgi", port, f"127.0.0.1:{server.port}")
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



# ---- the router's CPU a request ----------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _bursts(url: str, size: int, count: int) -> None:
    import aiohttp

    body = {"model": "m", "messages": [{"role": "user", "content": "Hi."}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3)) as client:
        async def one() -> None:
            async with client.post(url + "/v1/chat/completions", json=body) as r:
                await r.read()
        for _ in range(count):
            await asyncio.gather(*[one() for _ in range(size)])


def cost(burst: int = 64, bursts: int = 40) -> dict:
    """The router's own CPU time a request: bursts of `burst` short requests at once through the
    router to the stand-in pod (which answers at once), the router pinned to the first core and
    the pod and this client to the others. Its inverse is what one router core can carry, and
    `burst` times it is how long the last of a burst waits for the router."""
    cores = sorted(os.sched_getaffinity(0))
    everywhere = os.sched_getaffinity(0)
    pod_port, port = free_port(), free_port()
    pod = start("pod", pod_port)
    front = start("asgi", port, f"127.0.0.1:{pod_port}")
    _pin(front.pid, {cores[0]})
    _pin(pod.pid, set(cores[1:]) or {cores[0]})
    os.sched_setaffinity(0, set(cores[1:]) or {cores[0]})
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(_bursts(url, burst, 2))  # warm-up: connections to the pod, first-call costs
        before, started = _cpu_seconds(front.pid), time.perf_counter()
        asyncio.run(_bursts(url, burst, bursts))
        used, wall = _cpu_seconds(front.pid) - before, time.perf_counter() - started
    finally:
        os.sched_setaffinity(0, everywhere)
        for proc in (front, pod):
            proc.kill()
            proc.wait()
    requests = burst * bursts
    row = {"burst": burst, "requests": requests, "router_cpu_ms": round(used / requests * 1000, 3),
           "requests_per_router_core_s": round(requests / used) if used else None,
           "burst_on_router_ms": round(used / bursts * 1000, 1), "wall_ms": round(wall / requests * 1000, 3)}
    print(json.dumps(row), flush=True)
    return row


# ---- all of it, as markdown -------------------------------------------------------------------
def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def everything(rounds: int) -> str:
    import datetime

    load_before = os.getloadavg()
    over = overhead(rounds, [1, 8, 64])
    spent = cost()
    cache = cache_aware()
    zero = scale_from_zero()
    load_after = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ratios = []
    for arrivals in ARRIVALS:
        by = {row["placement"]: row for row in cache if row["arrivals"] == arrivals}
        ratios.append(f"users {arrivals}: {by['round-robin']['mean_ttft_ms'] / by['chwbl']['mean_ttft_ms']:.2f}x "
                      f"over all turns, {by['round-robin']['later_turns_mean_ttft_ms'] / by['chwbl']['later_turns_mean_ttft_ms']:.2f}x "
                      "over turns 2+")
    return "\n\n".join([
        f"`make bench-router` ({when}, {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after)",
        "Router overhead, a real server called directly and through the router (streamed chat, 64 tokens, "
        f"median of {rounds} alternating rounds of at least {SAMPLES} streams a side):",
        _table(over, [("streams", "streams"), ("direct_ttft_ms", "TTFT direct (ms)"),
                      ("router_ttft_ms", "TTFT via router (ms)"), ("ttft_added_ms", "added (ms)"),
                      ("direct_tok_s", "tok/s direct"), ("router_tok_s", "tok/s via router"),
                      ("tok_s_ratio", "ratio")]),
        f"The router's own CPU a request (bursts of {spent['burst']} short requests at once, a stand-in pod that "
        "answers at once; the router on a core of its own):",
        _table([spent], [("requests", "requests"), ("router_cpu_ms", "router CPU a request (ms)"),
                         ("requests_per_router_core_s", "requests a second one router core carries"),
                         ("burst_on_router_ms", "a burst's CPU on the router (ms)")]),
        f"Placement on 3 replicas (real servers, {SLOTS} slots and one llama.cpp thread each, a 20 M-parameter "
        f"model; {USERS} users, all at once or joining one after another, each with its own ~{SYSTEM_WORDS}-word "
        f"system prompt, {TURNS} turns each, 8 tokens an answer):",
        _table(cache, [("arrivals", "users"), ("placement", "placement"), ("requests", "requests"),
                       ("mean_ttft_ms", "mean TTFT (ms)"),
                       ("p50_ttft_ms", "p50 (ms)"), ("first_turns_mean_ttft_ms", "first turns mean (ms)"),
                       ("later_turns_mean_ttft_ms", "turns 2+ mean (ms)"),
                       ("prompt_tokens", "prompt tokens"), ("cached_tokens", "from the cache"),
                       ("ttft_by_turn_ms", "mean TTFT by turn (ms)"),
                       ("uncached_by_turn", "prompt tokens not in a slot, by turn")]),
        f"Mean TTFT, round robin / CHWBL: {'; '.join(ratios)}.",
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
    c = sub.add_parser("cost", help="the router's CPU time a request, in bursts, on a stand-in pod")
    c.add_argument("--burst", type=int, default=64)
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
    if args.command == "cost":
        cost(args.burst)
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
