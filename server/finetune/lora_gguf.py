"""A peft LoRA adapter written as llama.cpp's GGUF LoRA adapter (what convert_lora_to_gguf.py
makes, and `llama_adapter_lora_init` loads), with numpy and the `gguf` package only.

- `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`: llama.cpp applies
  B·A scaled by alpha / rank, peft's own scaling.
- Tensors are named after the base's (`blk.3.attn_q.weight.lora_a`), A as (rank, n_in) and
  B as (n_out, rank), in F32.
- llama.cpp's converter permutes the rows of llama's q and k weights (for its rope layout) and
  transformers undoes that when it reads a GGUF; peft trained on the unpermuted weights, so
  B's rows get the same permutation (W' = P·W and P·(B·A) = (P·B)·A).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Hugging Face module name -> llama.cpp tensor name, inside `model.layers.{i}.`
TENSOR_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TARGET_MODULES = [name.split(".")[1] for name in TENSOR_NAMES]
# The architectures the trainer takes, and whether llama.cpp's converter permuted q and k.
ARCHITECTURES = {"llama": True}


def permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output rows of a q or k matrix."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def gguf_name(hf_module: str) -> str:
    """'base_model.model.model.layers.3.self_attn.q_proj' -> 'blk.3.attn_q.weight'."""
    parts = hf_module.split(".")
    i = parts.index("layers")
    return f"blk.{int(parts[i + 1])}.{TENSOR_NAMES['.'.join(parts[i + 2:i + 4])]}.weight"


def write(path: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], architecture: str,
          n_head: int, n_head_kv: int, alpha: float) -> Path:
    """Write the adapter: `pairs` maps each peft module name to its (lora_A, lora_B) weights.
    Nothing else goes in (no name, no date), so the same training writes the same bytes."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for module in sorted(pairs, key=_layer_order):
        a, b = (np.ascontiguousarray(x, dtype=np.float32) for x in pairs[module])
        target = gguf_name(module)
        if ARCHITECTURES[architecture] and ".attn_q." in target:
            b = permute(b, n_head)
        elif ARCHITECTURES[architecture] and ".attn_k." in target:
            b = permute(b, n_head_kv)
        writer.add_tensor(target + ".lora_a", a)
        writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _layer_order(module: str) -> tuple[int, str]:
    name = gguf_name(module)
    return int(name.split(".")[1]), name
