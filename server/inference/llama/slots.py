"""The scheduler's plan, as pure functions: which slot a prompt goes to, and what it keeps.

A slot is one sequence in the shared llama.cpp context. It remembers the tokens whose
keys and values are in the KV cache, so a new prompt that starts the same way (the
same system prompt, the earlier turns of a conversation) decodes only what differs.
"""
from __future__ import annotations

from typing import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def choose_slot(free: Sequence[tuple[int, Sequence[int], float]], prompt: Sequence[int]) -> tuple[int, int]:
    """Pick a free slot for `prompt`: (slot index, tokens to keep from its cache).

    `free` holds (index, cached tokens, last used time). The longest shared prefix wins;
    with none shared, the least recently used slot, so the warm caches of other
    conversations survive longest. At least one prompt token is always left to decode,
    because the first sampled token needs the logits of the prompt's last position.
    """
    if not free:
        raise ValueError("no free slot")
    best = None
    for index, cached, last_used in free:
        keep = common_prefix(cached, prompt)
        key = (keep, -last_used)
        if best is None or key > best[0]:
            best = (key, index, keep)
    _, index, keep = best
    return index, min(keep, max(len(prompt) - 1, 0))


def plan_batch(generating: Sequence[int], prompting: Sequence[tuple[int, int]], capacity: int) -> list[tuple[int, int]]:
    """How many tokens each slot puts in the next batch: [(slot, n_tokens)].

    Slots that are generating go first, one token each, so a long prompt arriving never
    stalls the streams already running; prompts fill what is left, in arrival order,
    in chunks.
    """
    plan = [(s, 1) for s in generating[:capacity]]
    room = capacity - len(plan)
    for slot, remaining in prompting:
        if room <= 0:
            break
        take = min(remaining, room)
        plan.append((slot, take))
        room -= take
    return plan
