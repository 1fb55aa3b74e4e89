"""`cache`: where the router places conversations, measured. Three real servers on loopback
behind the router, and many users, each with a long system prompt of its own and several
turns: the time to first token when the router places by CHWBL, by its least-loaded fallback
alone, and by round robin. Two arrival shapes: every user at the same instant (a burst whose
first turns find nothing cached under any placement), and users who join one after another,
as vLLM production-stack's multi-round QA benchmark spaces its users
(benchmarks/multi-round-qa/multi-round-qa.py: a gap of a session's length over the users).
Also the benchmark's chat model and one streamed chat turn, which `zero` uses too.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import httpx

from router_stacks import NO_EOS, free_port, real_server, start


# A model big enough that a long prompt costs real time to evaluate (random weights, qwen2's
# vocabulary and chat template): 12 layers of 384, about 20 M parameters besides the embedding.
CHAT_SHAPE = {"n_embd": 384, "n_layer": 12, "n_head": 6, "n_head_kv": 2, "n_ff": 1024, "n_ctx_train": 8192,
              "tied": True}
# More users than a pod has slots, fewer than three pods have: where a conversation goes decides
# whether its prefix is still in a slot.
USERS, TURNS, SYSTEM_WORDS, SLOTS = 16, 6, 160, 8
# Seconds between two users' first turns when they join one after another: about a
# conversation's length here (6 turns, 2 to 3 s under CHWBL) over the users.
JOIN_GAP = 0.2
ARRIVALS = {"at once": 0.0, f"every {JOIN_GAP} s": JOIN_GAP}


def chat_model() -> Path:
    """The benchmark's chat model, made once and kept under MODELYARD_CACHE/test-models."""
    import hashlib

    from inference import modelgen

    cache = Path(os.environ.get("MODELYARD_CACHE") or Path.home() / ".cache" / "modelyard") / "test-models"
    digest = hashlib.sha256((modelgen.source_digest() + repr(CHAT_SHAPE)).encode()).hexdigest()[:12]
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


async def chat_turn(client: httpx.AsyncClient, url: str, messages: list) -> tuple[float, str, int, int]:
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


async def _conversations(url: str, seed: int, gap: float) -> list[tuple[float, int, int]]:
    """USERS conversations, the i-th starting i * gap seconds in, each TURNS turns one after another."""
    import random

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as client:
        async def user(i: int) -> list[tuple[float, int, int]]:
            await asyncio.sleep(i * gap)
            rng = random.Random(seed * 1000 + i)
            messages = [{"role": "system", "content": _system_prompt(rng)}]
            out = []
            for turn in range(TURNS):
                messages.append({"role": "user", "content": f"Question {turn + 1}: what comes next?"})
                ttft, answer, prompt, cached = await chat_turn(client, url, messages)
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
                servers.append(real_server(Path(tmp) / f"pod{i}", parallel=SLOTS, model=model, context=8192,
                                           threads=1))
            upstream = ",".join(f"127.0.0.1:{s.port}" for s in servers)
            for server in servers:  # the first request of a server pays one-off costs
                asyncio.run(chat_turn(httpx.AsyncClient(timeout=600), server.url,
                                      [{"role": "user", "content": "warm up"}]))
            runs = [(arrivals, placement) for arrivals in ARRIVALS for placement in ("round-robin", "least-loaded", "chwbl")]
            for seed, (arrivals, placement) in enumerate(runs):
                port = free_port()
                front = start("asgi", port, upstream, "--placement", placement)
                try:
                    # A seed a run: no conversation finds another run's prefix still in a slot.
                    turns = asyncio.run(_conversations(f"http://127.0.0.1:{port}", seed + 1, ARRIVALS[arrivals]))
                finally:
                    front.kill()
                    front.wait()
                ttfts = [t[0] for t in turns]
                by_turn = [turns[k::TURNS] for k in range(TURNS)]  # the list is user by user, turn by turn
                first = [t[0] for t in by_turn[0]]
                later = [t[0] for b in by_turn[1:] for t in b]
                row = {"arrivals": arrivals, "placement": placement, "requests": len(turns), "mean_ttft_ms": round(statistics.mean(ttfts), 1),
                       "p50_ttft_ms": round(statistics.median(ttfts), 1),
                       "first_turns_mean_ttft_ms": round(statistics.mean(first), 1),
                       "later_turns_mean_ttft_ms": round(statistics.mean(later), 1),
                       "prompt_tokens": sum(t[1] for t in turns), "cached_tokens": sum(t[2] for t in turns),
                       # Where the time goes: each turn's mean, and the prompt tokens no slot held.
                       "ttft_by_turn_ms": " / ".join(f"{statistics.mean(t[0] for t in b):.0f}" for b in by_turn),
                       "uncached_by_turn": " / ".join(f"{statistics.mean(t[1] - t[2] for t in b):.0f}" for b in by_turn)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for server in servers:
                server.stop()
    return rows

