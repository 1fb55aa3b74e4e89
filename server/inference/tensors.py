"""What an ONNX model takes and gives: tensor names, datatypes and shapes.

The datatypes are the KServe Open Inference Protocol's names (FP32, INT64, ...), which
the KServe API then speaks without translation.
"""
from __future__ import annotations

from dataclasses import dataclass

# onnxruntime's type strings.
ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple  # ints, -1 where any size goes

    def public(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def spec_from_ort(node) -> TensorSpec:
    dtype = ORT_TYPES.get(node.type, node.type)
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, dtype, shape)
