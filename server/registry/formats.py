"""Is a file what its model kind needs? GGUF for llm/vlm/embed, a loadable ONNX protobuf for onnx."""
from __future__ import annotations

from pathlib import Path

# Imported here, not on first use: an upload's commit should not pay for it.
from gguf import GGUFReader

GGUF_MAGIC = b"GGUF"


class FormatError(ValueError):
    pass


def check(kind: str, role: str, path: Path) -> None:
    """Raise FormatError with a message for the user when `path` is not usable for `kind`."""
    if kind == "onnx":
        check_onnx(path)
    else:
        check_gguf(path, role)


def check_gguf(path: Path, role: str = "model") -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise FormatError(
            f"The {role} file is not a GGUF file (it starts with {magic!r}, not b'GGUF')"
        )
    # The header must parse and every tensor must lie inside the file: this catches a
    # truncated file, which the magic bytes alone would let through.
    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise FormatError(f"The {role} GGUF file is truncated (tensor {tensor.name})")
    except FormatError:
        raise
    except Exception as exc:  # the reader raises many kinds of errors on a bad file
        raise FormatError(f"The {role} file is not a valid GGUF file: {exc}") from None


def check_onnx(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FormatError(f"The file is not a loadable ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FormatError("The file is not a loadable ONNX model: its graph is empty")
