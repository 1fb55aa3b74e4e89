"""Is a file a GGUF LoRA adapter that fits a base model? Checked before it is stored as an
adapter (Ollama's `create` with `adapters`), so a wrong file or another base's adapter is a
400 that says so, not a failure at its first request.

llama.cpp's rule (llama-adapter.cpp): for each base tensor W (ne = [n_in, n_out]) the adapter
names, `W.lora_a` has ne [n_in, rank] and `W.lora_b` ne [rank, n_out].
"""
from __future__ import annotations

from pathlib import Path

from modelyard.server.registry import formats
from modelyard.server.registry.errors import InvalidFile


def check(base: Path, adapter: Path) -> dict:
    """{"rank", "alpha"} of the adapter at `adapter` when it fits the model at `base`; else
    InvalidFile naming what does not fit. Reads the two headers and tensor tables, no weights
    and no vocabulary (formats.py's reader skips it)."""
    try:
        formats.check_gguf(adapter, "adapter")  # llama.cpp's rules: the server will load it
        meta = formats.gguf_metadata(adapter)
        lora = formats.gguf_tensor_shapes(adapter)
    except formats.FormatError as exc:
        raise InvalidFile(str(exc)) from None
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise InvalidFile("The adapter is not a LoRA adapter GGUF (general.type 'adapter', adapter.type "
                          "'lora', as llama.cpp's convert_lora_to_gguf.py writes)")
    shapes = formats.gguf_tensor_shapes(base)
    pairs: dict[str, dict[str, list[int]]] = {}
    for tensor, shape in lora.items():
        name, _, part = tensor.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            raise InvalidFile(f"The adapter's tensor '{tensor}' is neither a lora_a nor a lora_b")
        pairs.setdefault(name, {})[part] = shape
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
        if len(a) != 2 or len(b) != 2 or len(w) != 2 or a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise InvalidFile(f"The adapter's '{name}' (lora_a {_dims(a)}, lora_b {_dims(b)}) does not fit "
                              f"the base model's ({_dims(w)}): it was made for another model")
        rank = a[1]
    alpha = meta.get("adapter.lora.alpha")
    return {"rank": rank, "alpha": float(alpha) if alpha is not None else float(rank)}


def _dims(shape: list[int]) -> str:
    return " x ".join(map(str, shape))
