"""KServe Open Inference Protocol v2 tensors <-> numpy, checked against a model's inputs.

Pure functions. A wrong name, shape or datatype is an OipError whose message names the input.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelyard.server.inference.tensors import TensorSpec

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": object,
}


class OipError(ValueError):
    pass


class RequestInput(BaseModel):
    """One input tensor: `data` flat or nested, row-major, of `shape` elements."""

    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Literal[tuple(DTYPES)]
    data: list[Any]
    parameters: Optional[dict[str, Any]] = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    parameters: Optional[dict[str, Any]] = None


class InferBody(BaseModel):
    """POST /v2/models/{id}/infer: the Open Inference Protocol's inference request."""

    model_config = ConfigDict(extra="ignore", strict=True)
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: Optional[list[RequestOutput]] = None


def decode_inputs(body: dict, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError("'inputs' must be a non-empty list of tensors")
    by_name = {s.name: s for s in specs}
    feeds = {}
    for i, t in enumerate(inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise OipError(f"inputs[{i}] needs a name")
        name = t["name"]
        spec = by_name.get(name)
        if spec is None:
            raise OipError(f"input '{name}' is not an input of this model; it takes "
                           + ", ".join(by_name))
        if name in feeds:
            raise OipError(f"input '{name}' is given twice")
        feeds[name] = decode_tensor(t, spec)
    missing = [n for n in by_name if n not in feeds]
    if missing:
        raise OipError(f"missing input(s): {', '.join(missing)}")
    return feeds


def decode_tensor(t: dict, spec: TensorSpec) -> np.ndarray:
    name, dtype = spec.name, t.get("datatype")
    if dtype not in DTYPES:
        raise OipError(f"input '{name}': unknown datatype {dtype!r}")
    if dtype != spec.datatype:
        raise OipError(f"input '{name}': datatype {dtype} given, the model takes {spec.datatype}")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise OipError(f"input '{name}': shape must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(w != -1 and w != d for w, d in zip(spec.shape, shape)):
        raise OipError(f"input '{name}': shape {shape} given, the model takes {list(spec.shape)} (-1: any)")
    data = t.get("data")
    if not isinstance(data, list):
        raise OipError(f"input '{name}': data must be a list")
    try:
        if dtype == "BYTES":
            flat = [x.encode() if isinstance(x, str) else x for x in _flatten(data)]
            if not all(isinstance(x, bytes) for x in flat):
                raise ValueError("BYTES elements must be strings")
            arr = np.array([x.decode(errors="replace") for x in flat], dtype=object)
        else:
            arr = np.asarray(data, dtype=DTYPES[dtype]).reshape(-1)
            if dtype == "BOOL" and not all(isinstance(x, bool) for x in _flatten(data)):
                raise ValueError("BOOL elements must be true or false")
    except (ValueError, TypeError, OverflowError) as exc:
        raise OipError(f"input '{name}': data does not fit {dtype}: {exc}") from None
    expected = int(np.prod(shape)) if shape else 1
    if arr.size != expected:
        raise OipError(f"input '{name}': shape {shape} needs {expected} elements, data has {arr.size}")
    return arr.reshape(shape)


def _flatten(data):
    for x in data:
        if isinstance(x, list):
            yield from _flatten(x)
        else:
            yield x


def encode_tensor(name: str, arr: np.ndarray) -> dict:
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind in "SU":
        dtype = "BYTES"
        data = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]
    else:
        dtype = next((k for k, v in DTYPES.items() if v is not object and np.dtype(v) == arr.dtype), None)
        if dtype is None:
            raise OipError(f"output '{name}' has a type OIP cannot carry: {arr.dtype}")
        data = arr.reshape(-1).tolist()
    return {"name": name, "shape": list(arr.shape), "datatype": dtype, "data": data}


# ---- responses (for the OpenAPI document) ----------------------------------------------

class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[ResponseOutput]


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool
