"""Export: an adapter merged into its base, written as a GGUF model of its own.

The base's tensors are dequantized (`gguf.quants.dequantize`), each that the adapter touches
gets (alpha / rank) · B · A added (the adapter's B rows are in llama.cpp's q/k order already),
and the result is written in F16 (1-D tensors, the norms, stay F32 as llama.cpp's converter
keeps them). For q_bits other than 0, llama.cpp's quantizer (registry/quantize.py, a child
process) then writes the asked type. The file is written under a `.partial` name and renamed
when whole, so a failed export leaves nothing at `output_path`.

It runs as a job (jobs.py) in a child process of its own, `python -m
modelyard.server.finetune.export SPEC.json`, as the trainer does: the merge holds a model's
tensors in memory, which goes back to the system when the child ends, and a cancel kills it.
Progress goes to stdout as JSON lines: `{"event": "merge" | "quantize", "done", "total"}`.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from modelyard.server.finetune.errors import FinetuneError, JobConflict
from modelyard.server.registry import quantize
from modelyard.server.registry.diskio import PARTIAL

# Silicon Studio's q_bits -> the llama.cpp type (0: full precision, here F16)
Q_BITS = {0: "f16", 2: "q2_k", 3: "q3_k_m", 4: "q4_k_m", 6: "q6_k", 8: "q8_0"}
F16 = 1  # llama_ftype MOSTLY_F16


def quant_name(q_bits: int) -> str:
    if q_bits not in Q_BITS:
        raise FinetuneError(f"q_bits must be one of {', '.join(map(str, Q_BITS))} (0 is full precision), "
                            f"got {q_bits}")
    return Q_BITS[q_bits]


def output_file(folder_or_file: Path, adapter_id: str, q_bits: int) -> Path:
    """`output_path` as a file: a `.gguf` path as it is, a folder gets `<adapter>-<type>.gguf`.
    A folder that does not exist yet, in one that does, is made by the export (Silicon Studio's
    client names a new one, as mlx_lm.fuse's save_path)."""
    if folder_or_file.suffix.lower() == ".gguf":
        target = folder_or_file
    else:
        target = folder_or_file / f"{adapter_id}-{quant_name(q_bits).upper()}.gguf"
    if target.exists():
        raise JobConflict(f"'{target}' exists; export to another path")
    new_folder = target.parent == folder_or_file and not folder_or_file.exists()
    if not (target.parent.is_dir() or new_folder and folder_or_file.parent.is_dir()):
        raise FinetuneError(f"The folder '{target.parent}' does not exist")
    return target


def leftovers(target: Path) -> list[Path]:
    """The partial files an export to `target` writes before its rename (a killed one leaves them)."""
    return [target.with_name(target.name + ".f16" + PARTIAL), target.with_name(target.name + PARTIAL)]


def merge(base: Path, adapter: Path, out: Path, progress: Callable[[int, int], None] = lambda d, t: None) -> None:
    """Write base + adapter as an F16 GGUF at `out`, reporting (tensors merged, tensors)."""
    import gguf

    lora = gguf.GGUFReader(str(adapter))
    alpha = float(lora.fields["adapter.lora.alpha"].contents())
    deltas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for t in lora.tensors:
        name, part = t.name.rsplit(".", 1)
        a_b = deltas.setdefault(name, [None, None])
        a_b[0 if part == "lora_a" else 1] = np.array(t.data, dtype=np.float32)
    source = gguf.GGUFReader(str(base))
    arch = source.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(out), arch)
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    writer.add_file_type(F16)
    for i, t in enumerate(source.tensors):
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        data = data.reshape([int(d) for d in reversed(t.shape)])
        if t.name in deltas:
            a, b = deltas.pop(t.name)
            data = data + (alpha / a.shape[0]) * (b @ a)
        writer.add_tensor(t.name, data.astype(np.float16) if data.ndim > 1 else data)
        progress(i + 1, len(source.tensors))
    if deltas:
        raise FinetuneError(f"The adapter has tensors its base lacks: {', '.join(sorted(deltas))}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export(base: Path, adapter: Path, target: Path, q_bits: int, threads: int,
           cancel: threading.Event | None = None, progress: Callable[[str, int, int], None] = lambda s, d, t: None
           ) -> Path:
    """Merge and (for q_bits > 0) quantize into `target`, whole or not at all; `progress`
    gets ("merge" or "quantize", done, total)."""
    name = quant_name(q_bits)
    merged, partial = leftovers(target)
    target.parent.mkdir(exist_ok=True)
    try:
        merge(base, adapter, merged if q_bits else partial, lambda d, t: progress("merge", d, t))
        if q_bits:
            quantize.quantize(merged, partial, name, F16, lambda d, t: progress("quantize", d, t),
                              cancel or threading.Event(), threads)
        partial.rename(target)
    finally:
        for path in (merged, partial):
            path.unlink(missing_ok=True)
    return target


def main(argv: list[str]) -> int:
    # A cancel is SIGTERM: unwind, so the quantizer child is stopped and the partials go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec = json.loads(Path(argv[0]).read_text())

    def progress(stage: str, done: int, total: int) -> None:
        sys.stdout.write(json.dumps({"event": stage, "done": done, "total": total}) + "\n")
        sys.stdout.flush()

    export(Path(spec["base"]), Path(spec["adapter"]), Path(spec["target"]), spec["q_bits"], spec["threads"],
           progress=progress)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
