"""A vision projector (mmproj) GGUF and images for the vision tests: what libmtmd loads
beside a generated text model (modelgen.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vocabgen import sdist_dir

@dataclass(frozen=True)
class ClipShape:
    """A LLaVA-1.5-style vision tower, as small as libmtmd's clip loader accepts."""

    image_size: int = 32
    patch_size: int = 8
    n_embd: int = 32
    n_layer: int = 2  # llava's graph stops one layer early, so 2 runs one real block
    n_head: int = 2
    n_ff: int = 48  # not n_embd: clip.cpp swaps ffn up/down when ffn_down's input is n_embd
    proj_hidden: int = 48


def make_mmproj_gguf(path: Path, n_embd_text: int, shape: ClipShape = ClipShape(), seed: int = 0) -> Path:
    """A vision projector (mmproj) GGUF of projector type `mlp`, as LLaVA-1.5's, with random weights.

    The keys and tensor names are those tools/mtmd/clip.cpp (clip-impl.h) reads. The
    projector's output width is the text model's n_embd, which libmtmd checks at load.
    The image becomes (image_size / patch_size)^2 embeddings.
    """
    import gguf

    s = shape
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name(f"tiny-mmproj-{seed}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", s.image_size)
    writer.add_uint32("clip.vision.patch_size", s.patch_size)
    writer.add_uint32("clip.vision.embedding_length", s.n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", s.n_ff)
    writer.add_uint32("clip.vision.block_count", s.n_layer)
    writer.add_uint32("clip.vision.attention.head_count", s.n_head)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])

    def add(name, *dims, scale=None, value=None):
        # numpy shape is (rows, cols) = reversed GGUF dims, as in make_llama_gguf
        if value is not None:
            data = np.full(dims, value, dtype=np.float32)
        else:
            data = (rng.standard_normal(dims) * scale).astype(np.float32)
        writer.add_tensor(name, data)

    n_patches = (s.image_size // s.patch_size) ** 2
    # conv2d kernel: GGUF [patch, patch, 3, n_embd]. Large enough that pixels dominate
    # the position embeddings, so two different images give different embeddings.
    add("v.patch_embd.weight", s.n_embd, 3, s.patch_size, s.patch_size, scale=1.0 / s.patch_size)
    add("v.position_embd.weight", n_patches, s.n_embd, scale=0.02)
    add("v.pre_ln.weight", s.n_embd, value=1.0)
    add("v.pre_ln.bias", s.n_embd, value=0.0)
    std = 1.0 / np.sqrt(s.n_embd)
    for i in range(s.n_layer):
        p = f"v.blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add(p + t + ".weight", s.n_embd, s.n_embd, scale=std)
            add(p + t + ".bias", s.n_embd, value=0.0)
        for ln in ("ln1", "ln2"):
            add(p + ln + ".weight", s.n_embd, value=1.0)
            add(p + ln + ".bias", s.n_embd, value=0.0)
        add(p + "ffn_up.weight", s.n_ff, s.n_embd, scale=std)
        add(p + "ffn_up.bias", s.n_ff, value=0.0)
        add(p + "ffn_down.weight", s.n_embd, s.n_ff, scale=1.0 / np.sqrt(s.n_ff))
        add(p + "ffn_down.bias", s.n_embd, value=0.0)
    # the llava MLP projector: mm.0 (vision -> hidden), GELU, mm.2 (hidden -> text n_embd).
    # Scaled so the image embeddings are as large as token embeddings (std 1).
    add("mm.0.weight", s.proj_hidden, s.n_embd, scale=1.0 / np.sqrt(s.n_embd))
    add("mm.0.bias", s.proj_hidden, value=0.0)
    add("mm.2.weight", n_embd_text, s.proj_hidden, scale=2.0 / np.sqrt(s.proj_hidden))
    add("mm.2.bias", n_embd_text, value=0.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_png(width: int, height: int, pixel) -> bytes:
    """An 8-bit RGB PNG; pixel(x, y) -> (r, g, b). Written by hand: no imaging library needed."""
    import struct
    import zlib

    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def sample_jpeg() -> bytes:
    """A real JPEG photo that llama.cpp's sdist ships for its multimodal tests."""
    return (sdist_dir() / "vendor" / "llama.cpp" / "tools" / "mtmd" / "test-1.jpeg").read_bytes()
