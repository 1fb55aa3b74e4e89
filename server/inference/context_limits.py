"""How large a context a model may be loaded with: bounded by what it was trained for, by an
absolute limit, and by the memory its KV cache would take (checked before llama.cpp tries).

A context size comes from the registry (gguf.initContextSize), from a load request (Mullama's
context_size), or from --init-context-size. Without these bounds, 12,000,000 tokens grew a
runner past 2 GiB before failing, and 2^40 wrapped to a context of 0 inside llama.cpp.

The KV cache holds, per token, every layer's key and value rows: n_layer * n_head_kv *
(key head size + value head size) values of the cache's type. The figures come from the
GGUF header (read by the vocabulary-only model the server keeps), so the check costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelyard.server.inference.errors import BadRequest, InferenceError
from modelyard.server.inference.llama.kvcache import head_sizes

# Per slot. Far above what CPU serving can use, far below what wraps llama.cpp's 32-bit n_ctx
# once multiplied by the slots.
MAX_CONTEXT = 1 << 20
# Bytes per value of each cache type: f16, and blocks of 32 values with one f16 scale.
BYTES_PER_VALUE = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
GIB = 1024 ** 3


class ContextTooLarge(InferenceError):
    """A context the machine cannot hold: a conflict with its memory, not a malformed request."""

    code = 409


@dataclass(frozen=True)
class KvShape:
    """What one token costs in a model's KV cache, from its header."""

    n_layer: int
    n_head_kv: int
    head_k: int
    head_v: int

    def bytes_per_token(self, cache_type: str) -> float:
        return self.n_layer * self.n_head_kv * (self.head_k + self.head_v) * BYTES_PER_VALUE.get(cache_type, 2.0)


def check_context(requested: int | None, n_ctx_train: int) -> None:
    """A 400 for a context size no load should try (pure). None or 0: the engine's default."""
    if not requested:
        return
    if requested < 0:
        raise BadRequest(f"initContextSize {requested} is negative")
    if n_ctx_train and requested > n_ctx_train:
        raise BadRequest(f"initContextSize {requested} is larger than the {n_ctx_train} tokens this model "
                         f"was trained for (its context_length); use at most {n_ctx_train}")
    if requested > MAX_CONTEXT:
        raise BadRequest(f"initContextSize {requested} is larger than Modelyard's limit of {MAX_CONTEXT} tokens")


def check_kv_memory(shape: KvShape, cache_type: str, per_slot: int, n_slots: int, available: int | None) -> None:
    """A 409 when the KV cache of `n_slots` slots of `per_slot` tokens needs more memory than
    `available` bytes (None: unknown, no check). Pure."""
    if per_slot * n_slots >= 1 << 31:  # llama.cpp's n_ctx is 32-bit
        raise BadRequest(f"A context of {per_slot} tokens in each of {n_slots} slots is more tokens than "
                         "llama.cpp can address; lower initContextSize or --parallel")
    need = shape.bytes_per_token(cache_type) * per_slot * n_slots
    if available is not None and need > available:
        raise ContextTooLarge(
            f"A context of {per_slot} tokens in each of {n_slots} slots needs {need / GIB:.2f} GiB for its "
            f"{cache_type} KV cache ({shape.bytes_per_token(cache_type):.0f} bytes per token), and this "
            f"machine has {available / GIB:.2f} GiB available; lower initContextSize or --parallel, "
            "or use a quantized kvCacheType")


def available_memory(proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes this process may still take: the kernel's MemAvailable, and in a container the
    room left under its cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes),
    whichever is smallest. None when none is readable."""
    candidates = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in _cgroup_files(proc):
        try:
            raw = (cgroup / limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:  # no limit (v2 "max", v1 a huge number)
                continue
            candidates.append(max(int(raw) - int((cgroup / usage_file).read_text().strip()), 0))
        except (OSError, ValueError):
            continue
    return min(candidates) if candidates else None


def _cgroup_files(proc: Path) -> list[tuple[str, str]]:
    """(limit, usage) files of this process's memory cgroup, v2 and v1, relative to the
    mount; in a pod (its own cgroup namespace) the paths are the mount's root."""
    out = []
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        path = path.strip("/")
        if number == "0" and not controllers:
            out.append((f"{path}/memory.max".lstrip("/"), f"{path}/memory.current".lstrip("/")))
        elif "memory" in controllers.split(","):
            out.append((f"memory/{path}/memory.limit_in_bytes".replace("//", "/"),
                        f"memory/{path}/memory.usage_in_bytes".replace("//", "/")))
    return out


def trained_context(meta: dict) -> int:
    """<arch>.context_length from the GGUF's metadata (a vocabulary-only load of llama.cpp
    reads no hyperparameters, so they come from the metadata); 0 when it names none."""
    return _number(meta, "context_length")


def kv_shape(meta: dict) -> KvShape:
    """The KV shape from the GGUF's metadata, as llama.cpp reads it: a per-layer array of
    KV head counts is taken at its largest; head sizes from key_length / value_length, else
    embedding_length / head_count."""
    n_embd, n_head = _number(meta, "embedding_length"), _number(meta, "attention.head_count")
    n_head_kv = _number(meta, "attention.head_count_kv") or n_head
    return KvShape(_number(meta, "block_count"), n_head_kv, *head_sizes(meta, n_embd, n_head))


def _number(meta: dict, key: str) -> int:
    raw = str(meta.get(f"{meta.get('general.architecture', '')}.{key}", "")).strip()
    if raw.startswith("["):  # an array, as llama.cpp prints one: "[8, 8, 2, ...]"
        values = [int(x) for x in raw.strip("[]").replace("...", "").split(",") if x.strip().isdigit()]
        return max(values, default=0)
    try:
        return int(raw)
    except ValueError:
        return 0
