"""Generate small GGUF and ONNX models with real vocabularies, for tests and the benchmark.

The weights are random, so the text is nonsense, but every code path of llama.cpp runs:
real tokenizers (vocab-only GGUFs from llama-cpp-python's sdist), real chat templates,
real attention. Nothing is fetched from a model hub.

The llama-architecture text models are written here; the vocabularies (vocabgen.py), the
embedding models (embedgen.py), the ONNX models (onnxgen.py) and the vision projector and
images (visiongen.py) in modules beside it, whose names this module exports as well.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The modules beside this one, also when it is imported as inference.modelgen.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedgen import make_bert_gguf, make_minilm_gguf, minilm_dir  # noqa: E402,F401
from onnxgen import make_onnx_classifier, make_onnx_strings  # noqa: E402,F401
from visiongen import ClipShape, make_mmproj_gguf, make_png, sample_jpeg  # noqa: E402,F401
from vocabgen import CHATML_TEMPLATE, ROOT, SDIST, VOCABS, make_vocab_gguf, sdist_dir  # noqa: E402,F401
from vocabgen import copy_tokenizer, vocab_path  # noqa: E402


GENERATORS = ("modelgen.py", "vocabgen.py", "embedgen.py", "onnxgen.py", "visiongen.py")


def source_digest() -> str:
    """The hash of the generators' source (this module and the ones beside it), which names a
    cached generated model: one made by an older generator is not reused."""
    import hashlib

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in GENERATORS:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class LlamaShape:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 2048
    rope_theta: float = 10000.0
    tied: bool = False

# SmolLM2-135M's shape: the benchmark's model.
SMOLLM2_135M = LlamaShape(n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536,
                          n_ctx_train=8192, rope_theta=100000.0, tied=True)


def make_llama_gguf(path: Path, vocab: str | Path = "qwen2", shape: LlamaShape = LlamaShape(),
                    seed: int = 0, chat_template: str | None | bool = True,
                    qtype: str = "F32") -> Path:
    """A llama-architecture model with random weights and a real vocabulary.

    chat_template: True keeps the vocab's own template, None drops it, a string sets it.
    qtype: "F32", "F16" or "Q8_0" for the 2-D weights.
    """
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    # vocab: a name under the sdist's models/, or the path of a vocab-only GGUF (make_vocab_gguf)
    vocab_file = vocab if isinstance(vocab, Path) else vocab_path(vocab)
    writer.add_name(f"tiny-{vocab_file.stem.removeprefix('ggml-vocab-')}-{seed}")
    n_vocab = copy_tokenizer(writer, vocab_file, chat_template)
    s = shape
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_rope_dimension_count(s.n_embd // s.n_head)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[qtype]
    writer.add_file_type(ftype)

    head_dim = s.n_embd // s.n_head

    def add(name: str, *dims: int, scale: float = 0.0, matrix: bool = True):
        # numpy shape is (rows, cols) = reversed GGUF dims
        if scale:
            data = (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float32)
        else:
            data = np.ones(dims, dtype=np.float32)
        if not matrix or qtype == "F32":
            writer.add_tensor(name, data)
        elif qtype == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    std = 1.0 / np.sqrt(s.n_embd)
    add("token_embd.weight", n_vocab, s.n_embd, scale=1.0)
    add("output_norm.weight", s.n_embd, matrix=False)
    if not s.tied:
        add("output.weight", n_vocab, s.n_embd, scale=std)
    for i in range(s.n_layer):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", s.n_embd, matrix=False)
        add(p + "attn_q.weight", s.n_head * head_dim, s.n_embd, scale=std)
        add(p + "attn_k.weight", s.n_head_kv * head_dim, s.n_embd, scale=std)
        add(p + "attn_v.weight", s.n_head_kv * head_dim, s.n_embd, scale=std)
        add(p + "attn_output.weight", s.n_embd, s.n_head * head_dim, scale=std)
        add(p + "ffn_norm.weight", s.n_embd, matrix=False)
        add(p + "ffn_gate.weight", s.n_ff, s.n_embd, scale=std)
        add(p + "ffn_up.weight", s.n_ff, s.n_embd, scale=std)
        add(p + "ffn_down.weight", s.n_embd, s.n_ff, scale=1.0 / np.sqrt(s.n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


# llama.cpp's llama_ftype values for the quantizations its own quantizer makes
LLAMA_FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}


def quantize_gguf(src: Path, dst: Path, qtype: str, threads: int = 2) -> Path:
    """Quantize with llama.cpp's llama_model_quantize, as users' K-quant files are made.

    Rows whose width is not a multiple of 256 cannot hold K-quant blocks; llama.cpp then
    falls back to a legacy type for that tensor (Q5_0, Q8_0...), as it does for real models.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[qtype]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {qtype}) returned {rc}")
    return Path(dst)


def make_quantized_llama_gguf(path: Path, qtype: str, vocab: str | Path = "qwen2",
                              shape: LlamaShape = LlamaShape(), seed: int = 0,
                              chat_template: str | None | bool = True) -> Path:
    """make_llama_gguf in any of F32, F16, Q8_0 (written by the gguf package) or Q4_0,
    Q4_K_M, Q5_K_M, Q6_K (F16 first, then llama.cpp's quantizer)."""
    path = Path(path)
    if qtype in ("F32", "F16", "Q8_0"):
        return make_llama_gguf(path, vocab=vocab, shape=shape, seed=seed, chat_template=chat_template,
                               qtype=qtype)
    f16 = path.with_name(path.stem + ".f16.gguf")
    make_llama_gguf(f16, vocab=vocab, shape=shape, seed=seed, chat_template=chat_template, qtype="F16")
    try:
        return quantize_gguf(f16, path, qtype)
    finally:
        f16.unlink(missing_ok=True)
