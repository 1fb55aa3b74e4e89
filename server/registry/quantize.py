"""A new GGUF file in another quantization, made by llama.cpp's own quantizer
(`llama_model_quantize`, what `llama-quantize` and `ollama create --quantize` run).

The quantizer runs in a child process (`python -m modelyard.server.registry.quantize`),
so a native fault in it costs one create, not the server, and a cancel is a kill.
Progress is the output file's growth against the size the target type predicts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from modelyard.server.registry.errors import Cancelled, InvalidFile, StoreError

# Ollama's names for the types `create --quantize` takes, as llama.cpp's llama_ftype
# values, with their bits per weight (llama.cpp's quantize tool lists these).
FTYPES: dict[str, tuple[int, float]] = {
    "q4_0": (2, 4.5), "q4_1": (3, 5.0), "q5_0": (8, 5.5), "q5_1": (9, 6.0), "q8_0": (7, 8.5),
    "q2_k": (10, 2.96), "q3_k_s": (11, 3.5), "q3_k_m": (12, 3.91), "q3_k_l": (13, 4.27),
    "q4_k_s": (14, 4.58), "q4_k_m": (15, 4.89), "q5_k_s": (16, 5.54), "q5_k_m": (17, 5.69),
    "q6_k": (18, 6.56), "f16": (1, 16.0), "bf16": (32, 16.0),
}
# The source's own type (general.file_type) in bits per weight, to predict the output's size.
SOURCE_BITS = {0: 32.0, 1: 16.0, 32: 16.0, 7: 8.5}
POLL = 0.25


class QuantizeError(StoreError):
    code = 400


def ftype(name: str) -> int:
    """llama_ftype of an Ollama quantization name (q4_K_M, Q8_0...). Raises QuantizeError."""
    found = FTYPES.get(name.strip().lower())
    if found is None:
        raise QuantizeError(f"Unknown quantization '{name}'; choose one of: {', '.join(FTYPES)}")
    return found[0]


def check_source(file_type: int | None) -> None:
    """Only full-precision weights are quantized: re-quantizing a quantized file loses twice."""
    if file_type not in (None, 0, 1, 32):
        raise QuantizeError("Only an F32, F16 or BF16 model can be quantized (llama.cpp would "
                            "re-quantize a quantized one at a loss); create from the unquantized model")


def predicted_size(source_size: int, source_file_type: int | None, target: str) -> int:
    bits = SOURCE_BITS.get(source_file_type if source_file_type is not None else 1, 16.0)
    return max(int(source_size * FTYPES[target.strip().lower()][1] / bits), 1)


def quantize(source: Path, out: Path, target: str, source_file_type: int | None,
             progress: Callable[[int, int], None], cancel: threading.Event, threads: int | None = None) -> None:
    """Write `out` from `source` in `target`, reporting (bytes written, predicted total)."""
    check_source(source_file_type)
    code = ftype(target)
    total = predicted_size(source.stat().st_size, source_file_type, target)
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "modelyard.server.registry.quantize", str(source), str(out), str(code),
         str(threads or os.cpu_count() or 1)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(child.stderr.read()), daemon=True)
    reader.start()
    try:
        while child.poll() is None:
            if cancel.wait(POLL):
                child.kill()
                child.wait()
                raise Cancelled("The quantization was cancelled")
            try:
                progress(min(out.stat().st_size, total - 1), total)
            except FileNotFoundError:
                progress(0, total)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(5)
    if child.returncode != 0:
        tail = b"".join(errors).decode("utf-8", "replace").strip().splitlines()[-3:]
        raise InvalidFile(f"llama.cpp's quantizer failed (exit {child.returncode}): {' | '.join(tail)}")
    size = out.stat().st_size
    progress(size, size)


def _main(argv: list[str]) -> int:
    import llama_cpp

    source, out, code, threads = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(code)
    params.nthread = int(threads)
    return llama_cpp.llama_model_quantize(source.encode(), out.encode(), params)


if __name__ == "__main__":
    sys.exit(1 if _main(sys.argv[1:]) else 0)
