"""What every loaded model's engine answers, whatever runs it: a GGUF model's scheduler or
embedder in a runner process (llama/remote.py), or an ONNX session in this one. The APIs
read these facts through this protocol, never by probing attributes."""
from __future__ import annotations

from typing import Protocol


class Engine(Protocol):
    name: str
    n_params: int | None  # the weights' parameter count, when known
    kv_cache_type: str | None  # the KV cache's type (f16, q8_0, q4_0); None: no KV cache

    @property
    def context_size(self) -> int | None:
        """Tokens one request may hold (a decode slot's context, an embedder's longest
        input); None for an engine without a token context (ONNX)."""

    @property
    def alive(self) -> bool:
        """False once its runner process died: the model must be loaded again."""

    @property
    def pid(self) -> int | None:
        """The process that runs it, when it has one of its own."""

    @property
    def in_flight(self) -> int:
        """Requests waiting or running on it now."""

    def close(self) -> None: ...
