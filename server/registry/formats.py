"""Is a file what its model kind needs? GGUF for llm/vlm/embed, a loadable ONNX protobuf for onnx.

The GGUF check is a small reader of its own. It reads the header and the tensor table (never
the tensor data), and refuses, with a sentence that says what is wrong, every file that
llama.cpp's own parser would refuse or whose tensors do not lie inside the file. An upload is
checked before llama.cpp ever opens it, so a hostile file (a count, a length or an offset far
beyond the file, an unknown type, overlapping tensors) is a 400 at upload and never a crash or
a huge allocation in the server. The rules follow llama.cpp's `gguf_init_from_file` and model
loader (the version that the server's llama-cpp-python bundles): same limits, same layout.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# llama.cpp's limits (GGUF_MAX_STRING_LENGTH, GGUF_MAX_ARRAY_ELEMENTS, GGML_MAX_NAME, GGML_MAX_DIMS)
MAX_STRING = 1 << 30
MAX_ARRAY = 1 << 30
MAX_NAME = 64
MAX_DIMS = 4
INT64_MAX = (1 << 63) - 1
SIZE_MAX = (1 << 64) - 1

_U64 = struct.Struct("<Q")
# Metadata value types: id -> (name, struct format of one value; "" for string, None for array)
VALUE_TYPES = {
    0: ("uint8", "<B"), 1: ("int8", "<b"), 2: ("uint16", "<H"), 3: ("int16", "<h"),
    4: ("uint32", "<I"), 5: ("int32", "<i"), 6: ("float32", "<f"), 7: ("bool", "<b"),
    8: ("string", ""), 9: ("array", None), 10: ("uint64", "<Q"), 11: ("int64", "<q"),
    12: ("float64", "<d"),
}
STRING, ARRAY, UINT32 = 8, 9, 4
# Tensor types: only those whose block layout the gguf package knows (a type it does not know
# cannot be sized, so its bounds cannot be checked).
TENSOR_TYPES = {int(t): (GGMLQuantizationType(t).name, *GGML_QUANT_SIZES[t]) for t in GGML_QUANT_SIZES}
# The smallest key-value pair (an empty value is impossible: a one-byte key, a type, one byte)
# and the smallest tensor-table entry (name length, n_dims, type, offset): bounds for the counts.
MIN_KV = 8 + 1 + 4 + 1
MIN_TENSOR_INFO = 8 + 4 + 4 + 8


class FormatError(ValueError):
    pass


class _Bad(Exception):
    """A problem found while reading; its message is the user's sentence."""


class _Reader:
    """Reads forward through a file, refusing any read past its end before it happens."""

    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.size = size
        self.pos = 0

    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise _Bad(f"{what} at byte {self.pos} needs {n} bytes, but the file ends "
                       f"{self.remaining()} bytes later (truncated or corrupt)")
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while it was read
            raise _Bad(f"{what} at byte {self.pos}: the file ended early")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise _Bad(f"{what} at byte {self.pos} needs {n} bytes, but the file ends "
                       f"{self.remaining()} bytes later (truncated or corrupt)")
        self.pos += n
        self.f.seek(self.pos)

    def strings(self, count: int, what: str) -> None:
        """Skip over `count` strings, the elements of array `what`. The hot loop of a real
        model's header (hundreds of thousands of tokens and merges): messages are built only
        on failure."""
        f, size, pos = self.f, self.size, self.pos
        read, unpack = f.read, _U64.unpack
        try:
            for j in range(count):
                if size - pos < 8:
                    break
                n = unpack(read(8))[0]
                if n > MAX_STRING or n > size - pos - 8:
                    break
                if len(read(n)) != n:
                    raise struct.error
                pos += 8 + n
            else:
                self.pos = pos
                return
        except struct.error:
            self.pos = pos
            raise _Bad(f"element {j} of {what} at byte {pos}: the file ended early") from None
        # Read element j again, through the checked path, for its message.
        self.pos = pos
        f.seek(pos)
        self.string(f"element {j} of {what}")
        raise AssertionError("unreachable: the element was refused above")

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> bytes:
        start = self.pos
        n = self.unpack("<Q", f"the length of {what}")
        if n > MAX_STRING:
            raise _Bad(f"{what} at byte {start} claims a length of {n} bytes, "
                       f"more than llama.cpp's limit of {MAX_STRING}")
        if n > self.remaining():
            raise _Bad(f"{what} at byte {start} claims a length of {n} bytes, beyond the end "
                       f"of the file ({self.remaining()} bytes left)")
        return self.take(n, what)


def _name(raw: bytes) -> str:
    """A key or tensor name for a message: printable, and short even when the file is hostile."""
    text = "".join(c if c.isprintable() else "?" for c in raw[:64].decode("utf-8", "replace"))
    return text + "..." if len(raw) > 64 else text


def _pad(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def gguf_problem(source: bytes | bytearray | memoryview | BinaryIO, size: int | None = None) -> str | None:
    """What is wrong with a GGUF file, as a sentence for the user, or None when it is sound.

    `source` is the file's bytes or a binary file object positioned at its start (`size` is
    then its length; by default the length that seeking to its end finds). Reads the header
    and the tensor table only.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    if size is None:
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
    try:
        _check(_Reader(source, size))
    except _Bad as exc:
        return str(exc)
    return None


def _check(r: _Reader) -> None:
    magic = r.f.read(4)
    r.f.seek(0)
    if magic != GGUF_MAGIC:
        raise _Bad("it does not start with GGUF's magic b'GGUF'")  # never quote a file's bytes
    r.take(4, "the magic")
    version = r.unpack("<I", "the version")
    if version not in GGUF_VERSIONS:
        if version and (version & 0xFFFF) == 0:
            raise _Bad(f"GGUF version {version:#x} looks big-endian; llama.cpp reads little-endian files")
        raise _Bad(f"GGUF version {version} is not supported (llama.cpp reads versions 2 and 3)")
    n_tensors = r.unpack("<q", "the tensor count")
    n_kv = r.unpack("<q", "the metadata count")
    if n_tensors < 0 or n_tensors * MIN_TENSOR_INFO > r.remaining():
        raise _Bad(f"the header claims {n_tensors} tensors, which cannot fit in the "
                   f"{r.size}-byte file")
    if n_kv < 0 or n_kv * MIN_KV > r.remaining():
        raise _Bad(f"the header claims {n_kv} metadata entries, which cannot fit in the "
                   f"{r.size}-byte file")

    alignment = DEFAULT_ALIGNMENT
    keys: set[bytes] = set()
    for i in range(n_kv):
        at = r.pos
        key = r.string(f"metadata key {i}")
        if not key:
            raise _Bad(f"metadata key {i} at byte {at} is empty")
        if key in keys:
            raise _Bad(f"metadata key '{_name(key)}' appears twice")
        keys.add(key)
        label = f"the value of metadata key '{_name(key)}'"
        vtype = r.unpack("<i", f"the type of {label}")
        if vtype not in VALUE_TYPES:
            raise _Bad(f"metadata key '{_name(key)}' has unknown value type {vtype}")
        if vtype == ARRAY:
            sub = r.unpack("<i", f"the element type of {label}")
            if sub not in VALUE_TYPES:
                raise _Bad(f"metadata key '{_name(key)}' is an array of unknown type {sub}")
            if sub == ARRAY:
                raise _Bad(f"metadata key '{_name(key)}' is an array of arrays, "
                           f"which llama.cpp does not read")
            count = r.unpack("<Q", f"the length of {label}")
            if count > MAX_ARRAY:
                raise _Bad(f"metadata key '{_name(key)}' claims {count} elements, "
                           f"more than llama.cpp's limit of {MAX_ARRAY}")
            fmt = VALUE_TYPES[sub][1]
            each = 8 if sub == STRING else struct.calcsize(fmt)
            if count * each > r.remaining():
                raise _Bad(f"metadata key '{_name(key)}' claims {count} elements, beyond the "
                           f"end of the file ({r.remaining()} bytes left)")
            if sub == STRING:
                r.strings(count, f"metadata key '{_name(key)}'")
            else:
                r.skip(count * each, label)
        elif vtype == STRING:
            r.string(label)
        else:
            value = r.unpack(VALUE_TYPES[vtype][1], label)
            if key == b"general.alignment":
                if vtype != UINT32:
                    raise _Bad(f"general.alignment must be a uint32, not a {VALUE_TYPES[vtype][0]}")
                alignment = value
        if key == b"general.alignment" and vtype in (STRING, ARRAY):
            raise _Bad(f"general.alignment must be a uint32, not a {VALUE_TYPES[vtype][0]}")
    if alignment == 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment is {alignment}, which is not a power of two")

    tensors = []  # (name, offset, nbytes) in table order
    names: set[bytes] = set()
    for i in range(n_tensors):
        at = r.pos
        raw = r.string(f"the name of tensor {i}")
        name = _name(raw)
        if len(raw) >= MAX_NAME:
            raise _Bad(f"the name of tensor {i} at byte {at} is {len(raw)} bytes long; "
                       f"llama.cpp allows at most {MAX_NAME - 1}")
        if raw in names:
            raise _Bad(f"tensor '{name}' appears twice in the tensor table")
        names.add(raw)
        n_dims = r.unpack("<I", f"the dimension count of tensor '{name}'")
        if n_dims > MAX_DIMS:
            raise _Bad(f"tensor '{name}' claims {n_dims} dimensions; GGUF allows at most {MAX_DIMS}")
        dims = [r.unpack("<q", f"dimension {j} of tensor '{name}'") for j in range(n_dims)]
        if any(d < 0 for d in dims):
            raise _Bad(f"tensor '{name}' has a negative dimension: {dims}")
        # llama.cpp multiplies the dimensions in order and refuses as soon as a product would
        # overflow int64, even when a later dimension is 0.
        n_elements = dims[0] if dims else 1
        for d in dims[1:]:
            if d > 1 and n_elements > INT64_MAX // d:
                raise _Bad(f"tensor '{name}' has shape {dims}: its element count overflows int64")
            n_elements *= d
        ttype = r.unpack("<i", f"the type of tensor '{name}'")
        if ttype not in TENSOR_TYPES:
            raise _Bad(f"tensor '{name}' has unknown ggml type {ttype}")
        type_name, block, type_size = TENSOR_TYPES[ttype]
        row = dims[0] if dims else 1
        if row % block:
            raise _Bad(f"tensor '{name}' of type {type_name} has rows of {row} elements, "
                       f"not a multiple of its block size {block}")
        nbytes = n_elements // block * type_size
        if nbytes > SIZE_MAX - (alignment - 1):
            raise _Bad(f"tensor '{name}' has shape {dims}: its size in bytes overflows")
        offset = r.unpack("<Q", f"the data offset of tensor '{name}'")
        tensors.append((name, offset, nbytes))

    # The data section starts at the first multiple of the alignment after the table.
    data_start = _pad(r.pos, alignment) if n_tensors else r.pos
    if data_start > r.size:
        raise _Bad(f"the data section should start at byte {data_start} (the tensor table "
                   f"padded to the alignment of {alignment}), beyond the end of the file "
                   f"({r.size} bytes)")
    data_size = r.size - data_start
    for name, offset, nbytes in tensors:
        if offset % alignment:
            raise _Bad(f"tensor '{name}' is at offset {offset} of the data section, "
                       f"not a multiple of the alignment {alignment}")
        if offset + nbytes > data_size:
            raise _Bad(f"tensor '{name}' ({nbytes} bytes at offset {offset} of the data "
                       f"section) goes beyond the end of the file: the data section holds "
                       f"{data_size} bytes (truncated or corrupt)")
    ordered = sorted((t for t in tensors if t[2]), key=lambda t: t[1])
    for (a, a_off, a_len), (b, b_off, _) in zip(ordered, ordered[1:]):
        if b_off < a_off + a_len:
            raise _Bad(f"tensors '{a}' (bytes {a_off} to {a_off + a_len} of the data section) "
                       f"and '{b}' (from byte {b_off}) overlap")
    # llama.cpp also needs the tensors packed in table order, each padded to the alignment.
    expected = 0
    for name, offset, nbytes in tensors:
        if offset != expected:
            raise _Bad(f"tensor '{name}' is at offset {offset} of the data section; llama.cpp "
                       f"needs the tensors packed in table order, so it expects {expected}")
        expected += _pad(nbytes, alignment)


def check(kind: str, role: str, path: Path) -> None:
    """Raise FormatError with a message for the user when `path` is not usable for `kind`."""
    if kind == "onnx":
        check_onnx(path)
    else:
        check_gguf(path, role)


def check_gguf(path: Path, role: str = "model") -> None:
    # A large buffer: the header of a real model is hundreds of thousands of small fields.
    with open(path, "rb", buffering=1 << 20) as f:
        problem = gguf_problem(f, size=path.stat().st_size)
    if problem:
        raise FormatError(f"The {role} file is not a usable GGUF file: {problem}")


def check_onnx(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FormatError(f"The file is not a loadable ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise FormatError("The file is not a loadable ONNX model: its graph is empty")


def gguf_metadata(path: Path) -> dict:
    """A sound GGUF file's metadata: scalars and strings by key, and for each array its
    length under `<key>.count` (arrays such as the vocabulary are skipped, not read)."""
    with open(path, "rb") as f:
        return read_gguf_metadata(f, path.stat().st_size, path.name)


def read_gguf_metadata(f: BinaryIO, size: int, name: str) -> dict:
    """gguf_metadata of a file already open (`name` is what errors call it)."""
    r = _Reader(f, size)
    try:
        n_tensors, out = _metadata(r)
        if "general.parameter_count" not in out:
            # What Ollama's /api/show and Mullama's model list report, for files whose
            # converter did not write it: the tensor table's element counts, summed.
            out["general.parameter_count"] = _parameter_count(r, n_tensors)
    except (_Bad, KeyError, struct.error) as exc:
        raise FormatError(f"cannot read the metadata of {name}: {exc}") from None
    return out


def _metadata(r: _Reader) -> tuple[int, dict]:
    """The tensor count and the metadata (arrays by their length only); `r` ends at the
    tensor table."""
    out: dict = {}
    r.take(8, "the magic and version")
    n_tensors = r.unpack("<q", "the tensor count")
    for _ in range(r.unpack("<q", "the metadata count")):
        key = r.string("a metadata key").decode("utf-8", "replace")
        vtype = r.unpack("<i", "a value type")
        if vtype == ARRAY:
            sub = r.unpack("<i", "an element type")
            count = r.unpack("<Q", "an array length")
            out[f"{key}.count"] = count
            if sub == STRING:
                r.strings(count, key)
            else:
                r.skip(count * struct.calcsize(VALUE_TYPES[sub][1]), key)
        elif vtype == STRING:
            out[key] = r.string(key).decode("utf-8", "replace")
        else:
            value = r.unpack(VALUE_TYPES[vtype][1], key)
            out[key] = bool(value) if vtype == 7 else value
    return n_tensors, out


def _parameter_count(r: _Reader, n_tensors: int) -> int:
    """The sum of the tensors' element counts, read from the tensor table (no tensor data)."""
    total = 0
    for _, dims in _tensor_infos(r, n_tensors):
        count = 1
        for d in dims:
            count *= d
        total += count
    return total


def _tensor_infos(r: _Reader, n_tensors: int):
    """(name, dimensions) of each entry of the tensor table, where `r` stands after the metadata."""
    for _ in range(n_tensors):
        name = r.string("a tensor name").decode("utf-8", "replace")
        n_dims = r.unpack("<I", "a tensor's dimension count")
        if n_dims > MAX_DIMS:
            raise _Bad(f"a tensor claims {n_dims} dimensions")
        dims = [r.unpack("<q", "a tensor dimension") for _ in range(n_dims)]
        r.skip(4 + 8, "a tensor's type and offset")
        yield name, dims


def gguf_tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's dimensions (ggml's order, ne[0] first) by name, from the header and the
    tensor table alone: a 151k-token vocabulary is skipped, not decoded (gguf's GGUFReader
    builds every field, seconds in Python for such a file)."""
    with open(path, "rb", buffering=1 << 20) as f:
        r = _Reader(f, path.stat().st_size)
        try:
            n_tensors, _ = _metadata(r)
            return dict(_tensor_infos(r, n_tensors))
        except (_Bad, KeyError, struct.error) as exc:
            raise FormatError(f"cannot read the tensor table of {path.name}: {exc}") from None


class MetadataCache:
    """gguf_metadata of each model's file, read again only when the file changes (its inode,
    mtime or size): the model routes of every API read it on each listing."""

    def __init__(self):
        self._entries: dict[str, tuple[tuple, dict]] = {}

    def get(self, model_id: str, path: Path) -> dict:
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._entries.get(model_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            got = gguf_metadata(path)
        except FormatError:  # checked at upload; a file changed since shows bare
            got = {}
        self._entries[model_id] = (key, got)  # one entry per model: the file's current version
        return got
