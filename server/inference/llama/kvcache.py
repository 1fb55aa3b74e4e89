"""The KV cache's storage type (gguf.kvCacheType): llama.cpp's type_k / type_v, and when
flash attention must be on. Pure: the engine applies the result to its context params.

f16 is llama.cpp's default. q8_0 and q4_0 store blocks of 32 values with one f16 scale
(34 and 18 bytes per block, against 64 for f16), so a K or V row must hold whole blocks:
llama.cpp refuses a context whose head size is not a multiple of 32, with a message only
its log shows, so the engine says it first. A quantized V cache needs flash attention
(llama.cpp refuses it otherwise); the K cache is quantized with it, as llama.cpp's own
server does with --cache-type-k/-v together.
"""
from __future__ import annotations

from dataclasses import dataclass

import llama_cpp as L

from modelyard.server.shared.facts import DEFAULT_KV_CACHE_TYPE, KV_CACHE_TYPES

GGML_TYPES = {"f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0, "q4_0": L.GGML_TYPE_Q4_0}
BLOCK_SIZE = {"f16": 1, "q8_0": 32, "q4_0": 32}


class KvCacheError(ValueError):
    """A cache type this model cannot use; the message says why and what to do."""


@dataclass(frozen=True)
class KvCacheConfig:
    name: str
    type_k: int
    type_v: int
    # True: flash attention must be on; None: leave llama.cpp's default (auto).
    flash_attn: bool | None


def kv_cache_config(kv_cache_type: str | None, head_k: int, head_v: int) -> KvCacheConfig:
    name = kv_cache_type or DEFAULT_KV_CACHE_TYPE
    if name not in KV_CACHE_TYPES:
        raise KvCacheError(f"unknown KV cache type '{name}'; use one of: {', '.join(KV_CACHE_TYPES)}")
    block = BLOCK_SIZE[name]
    for what, size in (("key", head_k), ("value", head_v)):
        if size % block:
            raise KvCacheError(
                f"KV cache type {name} stores blocks of {block} values, and this model's attention "
                f"{what} head size is {size}: use kvCacheType f16 for it")
    quantized = name != "f16"
    return KvCacheConfig(name, GGML_TYPES[name], GGML_TYPES[name], True if quantized else None)


def head_sizes(meta: dict[str, str], n_embd: int, n_head: int) -> tuple[int, int]:
    """(key head size, value head size) from the GGUF's metadata, as llama.cpp reads them:
    <arch>.attention.key_length / value_length, else n_embd / n_head."""
    arch = meta.get("general.architecture", "")
    default = n_embd // n_head if n_head else n_embd

    def read(key: str) -> int:
        try:
            return int(meta[f"{arch}.attention.{key}"])
        except (KeyError, ValueError):
            return default

    return read("key_length"), read("value_length")
