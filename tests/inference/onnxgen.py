"""Small ONNX models for the onnx runtime's tests: numeric inputs and a string input."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
