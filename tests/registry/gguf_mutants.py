"""Hostile GGUF files for the checker's tests (test_hostile_gguf_parse.py, _load.py): valid
files (small llama models with real tokenizers, a one-tensor blob, a file with a custom
alignment and every metadata type), where each of their fields lies (read by the gguf package,
trusted on valid files), and seeded mutations of them: truncations; counts, lengths, types,
dimensions and offsets set to hostile values; random bytes and flipped bits in the header.
"""
from __future__ import annotations

import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelyard.server.registry.formats import TENSOR_TYPES
from support.modelfiles import make_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402

SEED = 20261130
N_CASES = 1200

# ---- the valid files and where their fields are -------------------------------------------


@dataclass
class Site:
    """A field of a valid file: where it is, how wide, and what it is."""
    # count | length | vtype | subtype | ttype | ndims | dim | offset | alignment | version | value
    kind: str
    at: int
    fmt: str    # struct format of the field


@dataclass
class Base:
    name: str
    data: bytes
    sites: list[Site]
    data_start: int
    data_end: int       # the end of the last tensor's bytes
    alignment: int
    spans: list[tuple[int, int, str]]   # (start, end, what): each metadata entry and tensor entry

    def where(self, pos: int) -> str:
        """The metadata key or tensor-table entry that holds byte `pos`."""
        for start, end, what in self.spans:
            if start <= pos < end:
                return what
        return "the fixed header" if pos < 24 else "the padding or data"


def layout(name: str, path: Path) -> Base:
    """Field positions from the gguf package's reader, which is trusted on these valid files."""
    import gguf

    reader = gguf.GGUFReader(path)
    origin = reader.data.ctypes.data

    def at(part) -> int:
        return int(part.ctypes.data - origin)

    sites = [Site("version", 4, "<I"), Site("count", 8, "<q"), Site("count", 16, "<q")]
    spans = []
    alignment = 32
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        p = field.parts
        sites += [Site("length", at(p[0]), "<Q"), Site("vtype", at(p[2]), "<i")]
        spans.append((at(p[0]), at(p[-1]) + p[-1].nbytes, key))
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.STRING:
            sites.append(Site("length", at(p[3]), "<Q"))
        elif vtype == gguf.GGUFValueType.ARRAY:
            sites += [Site("subtype", at(p[3]), "<i"), Site("count", at(p[4]), "<Q")]
            if field.types[1] == gguf.GGUFValueType.STRING:
                # a few element lengths: the first, one in the middle, the last
                for j in sorted({0, (len(p) - 5) // 4, (len(p) - 5) // 2 - 1}):
                    sites.append(Site("length", at(p[5 + 2 * j]), "<Q"))
        if key == "general.alignment":
            alignment = int(field.parts[-1][0])
            sites.append(Site("alignment", at(p[3]), "<I"))
        elif vtype not in (gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY):
            # a scalar value (a hyperparameter, a token id): the structure stays sound, so the
            # checker passes it and llama.cpp's loader meets the hostile value
            sites.append(Site("value", at(p[3]), VALUE_FORMATS.get(p[3].dtype.str, "")))
        elif vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 1 and len(p) > 5 \
                and field.types[1] in (gguf.GGUFValueType.INT32, gguf.GGUFValueType.UINT32):
            # token types, among others
            sites += [Site("value", at(p[-1]) + 4 * j, "<i") for j in (0, 1, 2)]
    for t in reader.tensors:
        p = t.field.parts
        spans.append((at(p[0]), at(p[-1]) + p[-1].nbytes, f"tensor {t.name}"))
        sites += [Site("length", at(p[0]), "<Q"), Site("ndims", at(p[2]), "<I"),
                  Site("ttype", at(p[4]), "<i"), Site("offset", at(p[5]), "<Q")]
        sites += [Site("dim", at(p[3]) + 8 * j, "<q") for j in range(len(p[3]))]
    data_start = min(int(t.data_offset) for t in reader.tensors)
    data_end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
    return Base(name, path.read_bytes(), sites, data_start, data_end, alignment, spans)


def make_mixed(path: Path) -> Path:
    """A custom alignment, one metadata key of every value type, tensors of several types."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_custom_alignment(64)
    T = gguf.GGUFValueType
    for i, (vt, value) in enumerate([(T.UINT8, 7), (T.INT8, -7), (T.UINT16, 700), (T.INT16, -700),
                                     (T.UINT32, 70000), (T.INT32, -70000), (T.FLOAT32, 1.5),
                                     (T.BOOL, True), (T.STRING, "seven"), (T.UINT64, 1 << 40),
                                     (T.INT64, -(1 << 40)), (T.FLOAT64, 2.5)]):
        writer.add_key_value(f"test.scalar.{i}", value, vt)
    writer.add_key_value("test.array.u32", [1, 2, 3, 4], T.ARRAY, T.UINT32)
    writer.add_key_value("test.array.str", ["a", "bc", "def"], T.ARRAY, T.STRING)
    writer.add_key_value("test.array.f64", [0.5, 0.25], T.ARRAY, T.FLOAT64)
    rng = np.random.default_rng(1)
    writer.add_tensor("f32", rng.random(40, dtype=np.float32))
    writer.add_tensor("f16", rng.random((3, 16), dtype=np.float32).astype(np.float16))
    q = gguf.quants.quantize(rng.random((2, 64), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("i32", np.arange(10, dtype=np.int32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_bases(d: Path) -> list[Base]:
    """The valid files, written into folder `d`, with their layouts."""
    # gpt-2's tokenizer cut to 512 tokens plus ChatML's: a real, loadable tokenizer in a small file
    vocab = modelgen.make_vocab_gguf(d / "vocab.gguf", base="gpt-2", n_base=512,
                                     extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    small = modelgen.LlamaShape(n_embd=64, n_layer=1, n_head=2, n_head_kv=1, n_ff=64, n_ctx_train=256)
    files = {
        "llama-q8": modelgen.make_llama_gguf(d / "llama-q8.gguf", vocab=vocab, shape=small, qtype="Q8_0"),
        "llama-f16": modelgen.make_llama_gguf(d / "llama-f16.gguf", vocab=vocab, seed=1, qtype="F16",
                                              shape=modelgen.LlamaShape(n_embd=32, n_layer=1, n_head=2,
                                                                        n_head_kv=2, n_ff=32, tied=True)),
        "blob": make_gguf(d / "blob.gguf", 8192),
        "mixed": make_mixed(d / "mixed.gguf"),
    }
    return [layout(name, path) for name, path in files.items()]


# ---- mutations -----------------------------------------------------------------------------

VALUE_FORMATS = {"<u4": "<I", "<i4": "<i", "<u8": "<Q", "<i8": "<q", "<f4": "<f", "<f8": "<d",
                 "|u1": "<B", "|i1": "<b", "<u2": "<H", "<i2": "<h"}
HOSTILE_FLOATS = [0.0, -0.0, -1.0, 1e-45, 1e38, float("inf"), float("-inf"), float("nan")]
HOSTILE_INTS = [0, 1, 2, 3, 31, 32, 63, 64, 255, 4096, (1 << 31) - 1, 1 << 31, (1 << 32) - 1,
                1 << 32, (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
FORMAT_RANGE = {"<I": (0, (1 << 32) - 1), "<i": (-(1 << 31), (1 << 31) - 1),
                "<Q": (0, (1 << 64) - 1), "<q": (-(1 << 63), (1 << 63) - 1),
                "<B": (0, 255), "<b": (-128, 127), "<H": (0, (1 << 16) - 1), "<h": (-(1 << 15), (1 << 15) - 1)}


@dataclass
class Case:
    index: int
    base: str
    what: str
    data: bytes
    must_refuse: str | None = None   # a word the refusal must contain, when it must be refused


def _fit(value: int, fmt: str) -> int:
    lo, hi = FORMAT_RANGE[fmt]
    width = 1 << (8 * struct.calcsize(fmt))
    value %= width
    return value - width if value > hi else value


def _hostile_value(rng: random.Random, site: Site, old: int, base: Base) -> int:
    choice = rng.random()
    if site.kind in ("vtype", "subtype"):
        return rng.choice([9, 13, 14, 100, -1, 1 << 30, rng.randrange(0, 13)])
    if site.kind == "ttype":
        return rng.choice([4, 5, 31, 36, 42, 43, 1000, -1, rng.choice(sorted(TENSOR_TYPES))])
    if choice < 0.3:
        return old + rng.choice([-2, -1, 1, 2, 8, base.alignment, -base.alignment])
    if choice < 0.45:
        return len(base.data) + rng.randrange(-64, 64)
    if choice < 0.85:
        return rng.choice(HOSTILE_INTS)
    return rng.getrandbits(64)


def make_cases(bases: list[Base]) -> list[Case]:
    rng = random.Random(SEED)
    kinds = ["truncate", "field", "field", "field", "field", "value", "bytes", "bits", "swap", "append"]
    cases = []
    for i in range(N_CASES):
        base = bases[i % len(bases)]
        data = bytearray(base.data)
        kind = rng.choice(kinds)
        values = [s for s in base.sites if s.kind == "value" and s.fmt]
        if kind == "value" and not values:
            kind = "field"
        must = None
        if kind == "truncate":
            # mostly inside the header and table, sometimes in the tensor data
            end = base.data_start if rng.random() < 0.7 else base.data_end
            cut = rng.randrange(0, end)
            data = data[:cut]
            what = f"truncated at {cut}"
            must = "" if cut >= 4 else "magic"  # every byte before the data end is needed
        elif kind == "field":
            site = rng.choice([s for s in base.sites if s.kind != "value"])
            old = struct.unpack_from(site.fmt, data, site.at)[0]
            new = _fit(_hostile_value(rng, site, old, base), site.fmt)
            if new == old:
                new = _fit(old + 1, site.fmt)
            struct.pack_into(site.fmt, data, site.at, new)
            what = f"{site.kind} at {site.at} ({base.where(site.at)}): {old} -> {new}"
            if site.kind == "ttype" and new not in TENSOR_TYPES:
                must = "unknown ggml type"
            elif site.kind == "vtype" and not 0 <= new <= 12:
                must = "unknown value type"
            elif site.kind == "offset" and new % base.alignment:
                must = "alignment"
            elif site.kind == "count" and site.at in (8, 16) and new > len(base.data):
                must = "cannot fit"
            elif site.kind == "alignment" and (new == 0 or new & (new - 1)):
                must = "power of two"
            elif site.kind == "version" and new not in (2, 3):
                must = "version"
        elif kind == "value":
            site = rng.choice(values)
            old = struct.unpack_from(site.fmt, data, site.at)[0]
            if site.fmt in ("<f", "<d"):
                new = rng.choice(HOSTILE_FLOATS)
            else:
                new = _fit(rng.choice([0, -1, 1, old * 2, old + 1, len(base.data), 1 << 20]
                                      + HOSTILE_INTS[10:]), site.fmt)
            struct.pack_into(site.fmt, data, site.at, new)
            what = f"value at {site.at} ({base.where(site.at)}): {old} -> {new}"
        elif kind == "bytes":
            n = rng.randint(1, 16)
            spots = [rng.randrange(4, base.data_start) for _ in range(n)]
            for spot in spots:
                data[spot] = rng.randrange(256)
            what = f"random bytes at {sorted(spots)} ({', '.join(sorted({base.where(x) for x in spots}))})"
        elif kind == "bits":
            spot = rng.randrange(0, base.data_start)
            bit = rng.randrange(8)
            data[spot] ^= 1 << bit
            what = f"bit {bit} flipped at {spot} ({base.where(spot)})"
            if spot < 4:
                must = "magic"
        elif kind == "swap":
            offsets = [s for s in base.sites if s.kind == "offset"]
            if len(offsets) < 2:
                struct.pack_into("<Q", data, offsets[0].at, base.alignment)
                what = "the only tensor moved one alignment on"
                must = ""
            else:
                a, b = rng.sample(offsets, 2)
                va, vb = struct.unpack_from("<Q", data, a.at)[0], struct.unpack_from("<Q", data, b.at)[0]
                if rng.random() < 0.5:
                    struct.pack_into("<Q", data, a.at, vb)
                    struct.pack_into("<Q", data, b.at, va)
                    what = f"offsets at {a.at} and {b.at} swapped"
                    must = ""
                else:
                    struct.pack_into("<Q", data, a.at, vb)
                    what = f"offset at {a.at} set to the one at {b.at}"
                    must = ""
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
            what = "bytes appended after the data"
        cases.append(Case(i, base.name, what, bytes(data), must))
    return cases
