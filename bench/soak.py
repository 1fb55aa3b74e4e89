"""Soak: many concurrent chats on one model for minutes; no request may fail and the server's
memory may not creep.

Starts the real server (`modelyard serve` under gunicorn, on 127.0.0.1) on a fresh store with
one generated GGUF model (SmolLM2-135M's shape, Q8_0, the real 49152-token starcoder
vocabulary: a realistic decode), then keeps `--streams` chats in flight for `--seconds`:
OpenAI SSE streams (through the openai client, and read raw to see `data: [DONE]`), Ollama
`/api/chat` NDJSON streams, and non-streamed requests of both, with prompts and lengths that
vary. A tenth of the raw streams hang up after a few chunks, as clients do: the server must free
their slots (they are counted apart, not as errors).

An error is a non-200 answer, an exception (a broken stream, a timeout), or a stream without
its final event (`finish_reason`, `[DONE]`, Ollama's `"done": true`); a runner process that
restarted and a traceback in the server's log count too. Every `--sample` seconds the RSS of
everything under the gunicorn master (its worker and the model's runner process) is summed.

    drift = (mean RSS over the last minute - mean RSS over the minute after warm-up) / the latter

(warm-up: the first minute; shorter runs scale both to a quarter of the run). Prints a table;
exits 1 when any request failed or the drift is 5% or more.

    .venv/bin/python bench/soak.py [--seconds 600] [--streams 64] [--parallel 8] [--shape smollm2|tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "inference"))

import modelgen  # noqa: E402
from support.servers import Server  # noqa: E402

CACHE = ROOT / ".cache" / "soak"
MODEL = "soak"
KEY = "soak"
AUTH = {"Authorization": f"Bearer {KEY}"}
CTX = 1024  # per decode slot
MAX_DRIFT = 0.05
WORDS = ("lighthouse keeper sea storm ship harbour night lamp wave rock gull rope tide fog bell "
         "captain island shore wind map star compass anchor sail cargo bread letter winter").split()
# Request kinds and how many of the streams run each (of 8).
MIX = ("openai-sdk-stream", "openai-sdk-stream", "openai-sse", "openai-sse",
       "ollama-stream", "ollama-stream", "openai-sdk", "ollama")
HANG_UP = 0.1  # share of raw streams that hang up after a few chunks


def model_file(shape: str) -> Path:
    """The generated model, made once per machine (about a minute for smollm2)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if shape == "tiny":
        path = CACHE / "tiny-phi3-f16.gguf"
        if not path.exists():
            modelgen.make_llama_gguf(path, vocab="phi-3", chat_template=None, qtype="F16")
    else:
        path = CACHE / "smollm2-135m-shape-q8_0.gguf"
        if not path.exists():
            tmp = path.with_suffix(".part")
            modelgen.make_llama_gguf(tmp, vocab="starcoder", shape=modelgen.SMOLLM2_135M,
                                     chat_template=None, qtype="Q8_0")
            tmp.rename(path)
    return path


def provision(store: Path, path: Path) -> None:
    """Put the model into a fresh store through the registry's API, as a user would."""
    server = Server(store, api_key=KEY, log_path=store.parent / "provision.log").start()
    try:
        httpx.post(server.url + "/store/v1/models", headers=AUTH, json={
            "id": MODEL, "version": "1", "kind": "llm",
            "gguf": {"chatTemplateHint": "chatml", "initContextSize": CTX}}).raise_for_status()
        with open(path, "rb") as f:
            r = httpx.post(f"{server.url}/store/v1/models/{MODEL}/upload", headers=AUTH,
                           files={"file": (path.name, f)}, timeout=600)
        r.raise_for_status()
        assert r.json()["readyToUse"] is True, r.text
    finally:
        server.stop()


@dataclass
class Tally:
    """What the clients saw, per request kind; shared by the client threads."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter = field(default_factory=Counter)
    hung_up: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def done(self, kind: str, tokens: int) -> None:
        with self.lock:
            self.ok[kind] += 1
            self.tokens[kind] += tokens

    def hang_up(self, kind: str) -> None:
        with self.lock:
            self.hung_up[kind] += 1

    def error(self, kind: str, what: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {what[:300]}")


class Failed(Exception):
    pass


def chat_body(rng: random.Random) -> tuple[list[dict], int]:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
    messages = [{"role": "system", "content": "You are a storyteller."},
                {"role": "user", "content": f"Tell a story about {words}."}]
    return messages, rng.randint(16, 96)


def openai_sdk_stream(client: openai.OpenAI, url: str, http: httpx.Client, rng: random.Random) -> int | None:
    messages, n = chat_body(rng)
    finish, usage = None, None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=n, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
    if finish not in ("stop", "length") or usage is None:
        raise Failed(f"stream ended without its final events (finish_reason={finish}, usage={usage})")
    return usage.completion_tokens


def split_lines(r: httpx.Response):
    """The response's lines, split at LF only (a CR before it dropped), as SSE and NDJSON
    frame them. Not httpx's iter_lines: it splits with str.splitlines, so a token holding
    U+2028 or U+0085 (raw in the server's UTF-8 JSON, as JSON allows) cuts an event in two."""
    pending = b""
    for chunk in r.iter_bytes():
        pending += chunk
        *done, pending = pending.split(b"\n")
        for line in done:
            yield line.removesuffix(b"\r").decode()
    if pending:
        yield pending.decode()


def openai_sse(client: openai.OpenAI, url: str, http: httpx.Client, rng: random.Random) -> int | None:
    """Read raw: the SDK takes a stream that stops before `data: [DONE]` as complete."""
    messages, n = chat_body(rng)
    hang_up_after = rng.randint(1, 4) if rng.random() < HANG_UP else None
    events, finish = [], None
    with http.stream("POST", url + "/v1/chat/completions", headers=AUTH,
                     json={"model": MODEL, "messages": messages, "max_tokens": n, "stream": True}) as r:
        if r.status_code != 200:
            raise Failed(f"{r.status_code} {r.read()[:200]!r}")
        for line in split_lines(r):
            if not line.startswith("data: "):
                continue  # blank separators and ": keep-alive" comments
            events.append(line[6:])
            if line[6:] != "[DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise Failed(f"error event {chunk['error']}")
                finish = chunk["choices"][0].get("finish_reason") or finish
            if hang_up_after is not None and len(events) >= hang_up_after:
                return None
    if not events or events[-1] != "[DONE]" or finish not in ("stop", "length"):
        raise Failed(f"stream ended without [DONE] or finish_reason (last {events[-1:]}, finish {finish})")
    return len(events) - 1


def ollama_stream(client: openai.OpenAI, url: str, http: httpx.Client, rng: random.Random) -> int | None:
    messages, n = chat_body(rng)
    hang_up_after = rng.randint(1, 4) if rng.random() < HANG_UP else None
    lines = []
    with http.stream("POST", url + "/api/chat", headers=AUTH,
                     json={"model": MODEL, "messages": messages, "options": {"num_predict": n}}) as r:
        if r.status_code != 200:
            raise Failed(f"{r.status_code} {r.read()[:200]!r}")
        for line in split_lines(r):
            if not line.strip():
                continue
            lines.append(json.loads(line))
            if "error" in lines[-1]:
                raise Failed(f"error line {lines[-1]['error']}")
            if hang_up_after is not None and len(lines) >= hang_up_after:
                return None
    if not lines or lines[-1].get("done") is not True or lines[-1].get("done_reason") not in ("stop", "length"):
        raise Failed(f"stream ended without its done line (last {lines[-1:]})")
    if any(x.get("done") for x in lines[:-1]):
        raise Failed("a done line before the last")
    return lines[-1]["eval_count"]


def openai_sdk(client: openai.OpenAI, url: str, http: httpx.Client, rng: random.Random) -> int | None:
    messages, n = chat_body(rng)
    done = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=n)
    if done.choices[0].finish_reason not in ("stop", "length"):
        raise Failed(f"finish_reason {done.choices[0].finish_reason}")
    return done.usage.completion_tokens


def ollama(client: openai.OpenAI, url: str, http: httpx.Client, rng: random.Random) -> int | None:
    messages, n = chat_body(rng)
    r = http.post(url + "/api/chat", headers=AUTH,
                  json={"model": MODEL, "messages": messages, "stream": False, "options": {"num_predict": n}})
    if r.status_code != 200:
        raise Failed(f"{r.status_code} {r.text[:200]}")
    body = r.json()
    if body.get("done") is not True or not isinstance(body.get("message", {}).get("content"), str):
        raise Failed(f"answer not done: {str(body)[:200]}")
    return body["eval_count"]


KINDS = {"openai-sdk-stream": openai_sdk_stream, "openai-sse": openai_sse, "ollama-stream": ollama_stream,
         "openai-sdk": openai_sdk, "ollama": ollama}


def client_loop(kind: str, seed: int, url: str, stop_at: float, tally: Tally,
                client: openai.OpenAI, http: httpx.Client) -> None:
    rng = random.Random(seed)
    call = KINDS[kind]
    while time.monotonic() < stop_at:
        try:
            tokens = call(client, url, http, rng)
        except Exception as e:  # every way a request can fail is one error
            tally.error(kind, f"{type(e).__name__}: {e}")
            time.sleep(0.5)  # a server that is down must not turn into a million errors a second
            continue
        if tokens is None:
            tally.hang_up(kind)
        else:
            tally.done(kind, tokens)


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    rss: int  # bytes, summed over the processes under the master
    runner_rss: int  # the part of it that is the runner processes'
    procs: int
    runner_pids: tuple
    load1: float


def sample(master: psutil.Process, t: float) -> Sample:
    rss, runner_rss, procs, runners = 0, 0, 0, []
    for p in master.children(recursive=True):
        try:
            mem = p.memory_info().rss
            procs += 1
            rss += mem
            if "modelyard.server.inference.llama.runner" in p.cmdline():
                runners.append(p.pid)
                runner_rss += mem
        except psutil.NoSuchProcess:
            continue
    return Sample(t, rss, runner_rss, procs, tuple(sorted(runners)), os.getloadavg()[0])


def windows(seconds: float) -> tuple[float, float]:
    """(warm-up, window): a minute each, or a quarter of a run shorter than four minutes."""
    part = min(60.0, seconds / 4)
    return part, part


def drift(samples: list[Sample], seconds: float, part=lambda s: s.rss) -> tuple[float, float, float]:
    """(baseline, final, drift): mean RSS (or `part` of it) over the window after warm-up,
    over the last window, and the final's change relative to the baseline."""
    warmup, window = windows(seconds)
    base = [part(s) for s in samples if warmup <= s.t < warmup + window]
    last = [part(s) for s in samples if s.t >= seconds - window]
    if not base or not last:
        raise ValueError("too few RSS samples: lower --sample or raise --seconds")
    b, f = statistics.fmean(base), statistics.fmean(last)
    return b, f, (f - b) / b


def server_tracebacks(log: str) -> int:
    return len(re.findall(r"^Traceback \(most recent call last\)", log, re.M))


def run(args) -> int:
    path = model_file(args.shape)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=CACHE))
    store = work / "store"
    provision(store, path)
    server_args = ("--preload", MODEL, "--parallel", str(args.parallel),
                   "--http-threads", str(args.streams + 32),
                   *(("--threads", str(args.threads)) if args.threads else ()))
    server = Server(store, api_key=KEY, args=server_args, log_path=work / "server.log")
    server.start(wait_ready=True, timeout=300)
    log_start = len(server.log())
    tally = Tally()
    samples: list[Sample] = []
    # No read timeout: on a loaded machine a queued request may wait minutes, which is slow,
    # not an error; a request that never ends shows as a client stuck at the end.
    timeout = httpx.Timeout(60, connect=10, read=None, pool=None)
    limits = httpx.Limits(max_connections=args.streams * 2, max_keepalive_connections=args.streams)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=timeout,
                           http_client=httpx.Client(limits=limits, timeout=timeout))
    http = httpx.Client(limits=limits, timeout=timeout)
    master = psutil.Process(server.proc.pid)
    load_before = os.getloadavg()
    start = time.monotonic()
    stop_at = start + args.seconds
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(MIX[i % len(MIX)], i, server.url, stop_at, tally, client, http))
               for i in range(args.streams)]
    try:
        for t in threads:
            t.start()
        while time.monotonic() < stop_at:
            samples.append(sample(master, time.monotonic() - start))
            time.sleep(min(args.sample, max(0.0, stop_at - time.monotonic())))
        samples.append(sample(master, time.monotonic() - start))
        for t in threads:  # requests in flight at the end finish (or fail) normally
            t.join(timeout=max(1.0, stop_at + 600 - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
    finally:
        load_after = os.getloadavg()
        log = server.log()[log_start:]
        server.stop()
        shutil.rmtree(store, ignore_errors=True)  # a copy of the model; the log stays
    baseline, final, change = drift(samples, args.seconds)
    with open(work / "rss.csv", "w") as f:  # to see the curve, not only its ends
        f.write("seconds,rss_bytes,runner_rss_bytes,load1\n")
        f.writelines(f"{s.t:.1f},{s.rss},{s.runner_rss},{s.load1:.2f}\n" for s in samples)
    restarts = len({s.runner_pids for s in samples}) - 1
    tracebacks = server_tracebacks(log)
    errors = sum(tally.errors.values()) + stuck + restarts + tracebacks
    report(args, tally, samples, baseline, final, change, restarts, tracebacks, stuck, load_before, load_after)
    print(f"\nserver log: {work / 'server.log'}; RSS samples: {work / 'rss.csv'}")
    failed = errors > 0 or change >= MAX_DRIFT
    print(f"\n{'FAIL' if failed else 'PASS'}: {errors} errors, RSS drift {change:+.2%} (limit {MAX_DRIFT:.0%})")
    return 1 if failed else 0


def report(args, tally, samples, baseline, final, change, restarts, tracebacks, stuck, load_before, load_after):
    mib = 1024 * 1024
    print(f"\nsoak: {args.streams} streams on one model ({args.shape}, {args.parallel} decode slots) "
          f"for {args.seconds:.0f} s, {os.cpu_count()} CPUs\n")
    print("| requests | completed | hung up (by the client) | errors | tokens |")
    print("|---|---:|---:|---:|---:|")
    for kind in KINDS:
        print(f"| {kind} | {tally.ok[kind]} | {tally.hung_up[kind]} | {tally.errors[kind]} | {tally.tokens[kind]} |")
    print(f"| **all** | {sum(tally.ok.values())} | {sum(tally.hung_up.values())} | "
          f"{sum(tally.errors.values())} | {sum(tally.tokens.values())} |")
    warmup, window = windows(args.seconds)
    print("\n| measure | value |\n|---|---:|")
    print(f"| RSS, mean over {warmup:.0f}-{warmup + window:.0f} s (baseline) | {baseline / mib:.1f} MiB |")
    print(f"| RSS, mean over the last {window:.0f} s | {final / mib:.1f} MiB |")
    print(f"| RSS drift | {change:+.2%} |")
    for label, part in (("gunicorn worker", lambda s: s.rss - s.runner_rss), ("runner", lambda s: s.runner_rss)):
        b, f, c = drift(samples, args.seconds, part)
        print(f"| of which the {label}: baseline, last, drift | {b / mib:.1f}, {f / mib:.1f} MiB, {c:+.2%} |")
    print(f"| RSS, lowest / highest sample | {min(s.rss for s in samples) / mib:.1f} / "
          f"{max(s.rss for s in samples) / mib:.1f} MiB |")
    print(f"| RSS samples (every {args.sample:.0f} s), processes | {len(samples)}, "
          f"{min(s.procs for s in samples)}-{max(s.procs for s in samples)} |")
    print(f"| runner restarts, server tracebacks, clients stuck at the end | {restarts}, {tracebacks}, {stuck} |")
    print(f"| load average (1 min) before / mean during / after | {load_before[0]:.2f} / "
          f"{statistics.fmean(s.load1 for s in samples):.2f} / {load_after[0]:.2f} |")
    if tally.examples:
        print("\nfirst errors:")
        for line in tally.examples:
            print("  " + line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=600, help="how long the load runs (default 600)")
    p.add_argument("--streams", type=int, default=64, help="concurrent requests (default 64)")
    p.add_argument("--parallel", type=int, default=8, help="decode slots (the server's --parallel; default 8)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: the server's, every CPU)")
    p.add_argument("--sample", type=float, default=5, help="seconds between two RSS samples (default 5)")
    p.add_argument("--shape", choices=("smollm2", "tiny"), default="smollm2",
                   help="smollm2: SmolLM2-135M's shape, Q8_0 (default); tiny: a 64-wide model for a quick run")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
