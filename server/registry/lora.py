"""Is a file a GGUF LoRA adapter that fits a base model? Checked before it is stored as an
adapter (Ollama's `create` with `adapters`), so a wrong file or another base's adapter is a
400 that says so, not a failure at its first request.

llama.cpp's rule (llama-adapter.cpp): for each base tensor W (ne = [n_in, n_out]) the adapter
names, `W.lora_a` has ne [n_in, rank] and `W.lora_b` ne [rank, n_out].
"""
from __future__ import annotations

from pathlib import Path

from modelyard.server.registry.errors import InvalidFile


def check(base: Path, adapter: Path) -> dict:
    """{"rank", "alpha"} of the adapter at `adapter` when it fits the model at `base`; else
    InvalidFile naming what does not fit."""
    import gguf

    try:
        lora = gguf.GGUFReader(str(adapter))
    except (ValueError, OSError) as exc:
        raise InvalidFile(f"The adapter is not a GGUF file: {exc}") from None
    kind = _field(lora, "general.type")
    if kind != "adapter" or _field(lora, "adapter.type") != "lora":
        raise InvalidFile("The adapter is not a LoRA adapter GGUF (general.type 'adapter', adapter.type "
                          "'lora', as llama.cpp's convert_lora_to_gguf.py writes)")
    shapes = {t.name: [int(d) for d in t.shape] for t in gguf.GGUFReader(str(base)).tensors}
    pairs: dict[str, dict[str, list[int]]] = {}
    for t in lora.tensors:
        name, _, part = t.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            raise InvalidFile(f"The adapter's tensor '{t.name}' is neither a lora_a nor a lora_b")
        pairs.setdefault(name, {})[part] = [int(d) for d in t.shape]
    if not pairs:
        raise InvalidFile("The adapter has no tensors")
    rank = None
    for name, parts in pairs.items():
        a, b, w = parts.get("lora_a"), parts.get("lora_b"), shapes.get(name)
        if a is None or b is None:
            raise InvalidFile(f"The adapter's '{name}' lacks its lora_a or lora_b")
        if w is None:
            raise InvalidFile(f"The adapter changes '{name}', which the base model does not have: "
                              "it was made for another model")
        if a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise InvalidFile(f"The adapter's '{name}' ({a[0]} x {b[1]}) does not fit the base model's "
                              f"({w[0]} x {w[1]}): it was made for another model")
        rank = a[1]
    alpha = _field(lora, "adapter.lora.alpha")
    return {"rank": rank, "alpha": float(alpha) if alpha is not None else float(rank)}


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()
