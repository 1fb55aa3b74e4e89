"""LoRA adapters applied per request, as llama.cpp's server does it.

An adapter set is a tuple of (adapter file, scale), the same for every request that asks for
the same adapters in any order. llama.cpp applies one set to a whole decode
(`llama_set_adapters_lora` on the context), so one batch holds the requests of one set; the
scheduler picks the set of the request that has waited longest (`batch_set`), and a slot's
cached prefix is reused only by a request of the set it was computed with.

Adapters are loaded into the model once, on first use, and kept until the model goes (llama.cpp
frees a model's adapters with it).
"""
from __future__ import annotations

import ctypes
from typing import Iterable, Sequence

AdapterSet = tuple[tuple[str, float], ...]
NONE: AdapterSet = ()


def normal(adapters: Iterable[tuple[str, float]]) -> AdapterSet:
    """One spelling per set: sorted, scales as floats, zero scales left out (a no-op)."""
    return tuple(sorted((str(path), float(scale)) for path, scale in adapters if float(scale) != 0.0))


def batch_set(running: Sequence[tuple[float, AdapterSet]]) -> AdapterSet:
    """The set this step decodes: that of the oldest running request (submitted first)."""
    return min(running, key=lambda r: r[0])[1] if running else NONE


class AdapterError(Exception):
    pass


class Adapters:
    """The adapters loaded into one model, and the set its context has on."""

    def __init__(self, model):
        self.model = model
        self._loaded: dict[str, object] = {}
        self.applied: AdapterSet = NONE

    def load(self, path: str):
        """The adapter at `path`, loaded once. Raises AdapterError when llama.cpp refuses it
        (not a LoRA GGUF, or made for another model: its tensors' shapes differ)."""
        import llama_cpp as L

        handle = self._loaded.get(path)
        if handle is None:
            handle = L.llama_adapter_lora_init(self.model.ptr, path.encode())
            if not handle:
                raise AdapterError(f"llama.cpp cannot apply the adapter {path} to this model "
                                   "(another base model's adapter, or not a LoRA GGUF)")
            self._loaded[path] = handle
        return handle

    def apply(self, ctx, adapters: AdapterSet) -> None:
        """Put `adapters` on the context (nothing when they are on already)."""
        import llama_cpp as L

        if adapters == self.applied:
            return
        n = len(adapters)
        handles = (L.llama_adapter_lora_p_ctypes * max(n, 1))(*[self.load(p) for p, _ in adapters])
        scales = (ctypes.c_float * max(n, 1))(*[s for _, s in adapters])
        rc = L.llama_set_adapters_lora(ctx, handles if n else None, n, scales if n else None)
        if rc != 0:
            raise AdapterError(f"llama_set_adapters_lora failed with code {rc}")
        self.applied = adapters
