"""Small, valid model files made on the spot: the tests never fetch a model."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_gguf(path: Path, size_bytes: int = 64 * 1024, seed: int = 0, arch: str = "llama") -> Path:
    """A GGUF file with one f32 tensor, about `size_bytes` long. Valid, not a usable LLM
    (with arch "clip", what a vision projector's header says)."""
    import gguf

    n = max(size_bytes // 4, 8)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"test-{seed}")
    writer.add_tensor("blob", np.random.default_rng(seed).random(n, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_pooling_gguf(path: Path, arch: str = "llama") -> Path:
    """A GGUF whose header says its model pools its output (`<arch>.pooling_type`), as an
    embedding model made from a decoder says. Not loadable."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_onnx(path: Path) -> Path:
    """y = x + 1 on a float32 [1, 4] tensor."""
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add-one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)


def make_big_gguf(path: Path, size_bytes: int, block: int = 1 << 20) -> Path:
    """A valid GGUF of about `size_bytes`, written in blocks: memory stays flat."""
    import gguf

    n_bytes = (size_bytes // block) * block
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor_info("blob", [n_bytes // 4], np.dtype(np.float32), n_bytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    f = writer.fout[0] if isinstance(writer.fout, list) else writer.fout
    f.write(b"\0" * (-f.tell() % writer.data_alignment))
    pattern = np.random.default_rng(0).bytes(block)
    for _ in range(n_bytes // block):
        f.write(pattern)
    writer.close()
    return Path(path)
