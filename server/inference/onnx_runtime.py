"""An ONNX model: one onnxruntime InferenceSession, shared by every request thread.

InferenceSession.run is thread-safe, so requests run concurrently without a lock.
"""
from __future__ import annotations

import logging
from pathlib import Path

from modelyard.server.inference.tensors import TensorSpec, spec_from_ort
from modelyard.server.shared.facts import EXECUTION_PROVIDERS

log = logging.getLogger(__name__)


def choose_providers(requested: str | None, available: list[str], model_id: str = "") -> list[str]:
    """The provider list for a session: the requested one (then CPU), or CPU with a warning."""
    if not requested or requested == "cpu":
        return ["CPUExecutionProvider"]
    name = EXECUTION_PROVIDERS.get(requested)
    if name and name in available:
        return [name, "CPUExecutionProvider"]
    log.warning("model %s asks for executionProvider %r, which this onnxruntime does not have "
                "(available: %s); running on cpu", model_id, requested, ", ".join(available))
    return ["CPUExecutionProvider"]


class OnnxModel:
    def __init__(self, path: Path | str, provider: str | None = None, threads: int = 0, name: str = ""):
        import onnxruntime as ort

        self.name = name or Path(path).stem
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.providers = choose_providers(provider, ort.get_available_providers(), self.name)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        self.inputs: list[TensorSpec] = [spec_from_ort(i) for i in self.session.get_inputs()]
        self.outputs: list[TensorSpec] = [spec_from_ort(o) for o in self.session.get_outputs()]
        self.size = Path(path).stat().st_size

    # The Engine protocol (inference/engine.py): an ONNX session runs in this process, has no
    # token context or KV cache, and runs requests as they come.
    n_params = None
    kv_cache_type = None
    context_size = None
    alive = True
    pid = None
    in_flight = 0

    def run(self, feeds: dict, output_names: list[str] | None = None) -> dict:
        names = output_names or [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))

    def close(self) -> None:
        self.session = None
