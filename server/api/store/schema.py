"""The registry's request bodies (the mimOE mModelStore API), declared as pydantic models.

Strict: a JSON true is not a size, a number is not a version, and unknown fields are
refused, so a typo in a field name is a 400 rather than a setting silently ignored.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from modelyard.server.shared.facts import (
    ADAPTER_KIND, CHAT_TEMPLATE_HINTS, EXECUTION_PROVIDERS, KINDS, KV_CACHE_TYPES, id_problem, kv_cache_problem,
)


class SchemaError(ValueError):
    """A query parameter that does not fit; the message names it."""


def _valid_id(value: str) -> str:
    problem = id_problem(value)
    if problem:
        raise ValueError(f"invalid model id: it {problem}")
    return value


ModelId = Annotated[str, AfterValidator(_valid_id), Field(
    description="The model id: letters, digits, '-', '_' and '.', at most 255 characters; "
                "not starting with '.' or '-', without '..'.", examples=["smollm2-360m"])]
Kind = Literal[KINDS]
# What lists show and filter by: the kinds a model is created with, and fine-tuning's adapters
# (made by a job or Ollama's create with adapters, never created through this API).
LISTED_KINDS = (*KINDS, ADAPTER_KIND)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GgufSettings(_Strict):
    """How a GGUF model (llm, vlm, embed) is served."""

    chatTemplateHint: Optional[Literal[CHAT_TEMPLATE_HINTS]] = Field(
        None, description="The chat template to use when the GGUF carries none.")
    initContextSize: Optional[int] = Field(None, ge=0, description="Context size in tokens (0: the model's own).")
    initGpuLayerSize: Optional[int] = Field(None, ge=0, description="Layers offloaded to the GPU.")
    kvCacheType: Optional[Literal[KV_CACHE_TYPES]] = Field(
        None, description="How llama.cpp stores the KV cache of an llm or vlm: f16 (the default), "
                          "q8_0 (about 0.53x the bytes of f16) or q4_0 (about 0.28x; output drifts "
                          "more). A quantized cache runs with flash attention.")


class OnnxSettings(_Strict):
    """How an ONNX model is served."""

    executionProvider: Optional[Literal[tuple(EXECUTION_PROVIDERS)]] = Field(
        None, description="onnxruntime's execution provider; cpu when this one is missing.")


class _Sections(_Strict):
    gguf: Optional[GgufSettings] = None
    onnx: Optional[OnnxSettings] = None

    def sections_for(self, kind: str | None) -> dict:
        """The gguf/onnx sections given, checked against the model's kind."""
        out = {}
        if self.gguf is not None:
            if kind == "onnx":
                raise SchemaError("Field 'gguf' does not apply to kind 'onnx'; use 'onnx'")
            problem = kv_cache_problem(kind, self.gguf.kvCacheType) if kind is not None else None
            if problem:
                raise SchemaError(f"Field 'gguf.kvCacheType' {problem}")
            out["gguf"] = self.gguf.model_dump(exclude_none=True)
        if self.onnx is not None:
            if kind is not None and kind != "onnx":
                raise SchemaError(f"Field 'onnx' does not apply to kind '{kind}'; use 'gguf'")
            out["onnx"] = self.onnx.model_dump(exclude_none=True)
        return out


class CreateModel(_Sections):
    """POST /models: the model's metadata; the file comes with upload or download."""

    id: ModelId
    version: str = Field(description="The model's version; metadata only.", examples=["1.0.0"])
    kind: Kind = Field(description="llm, vlm (llm with images), embed or onnx.")

    @model_validator(mode="after")
    def _sections_fit_kind(self):
        self.sections_for(self.kind)
        return self

    def fields(self) -> dict:
        return {"id": self.id, "version": self.version, "kind": self.kind, **self.sections_for(self.kind)}


class UpdateModel(_Sections):
    """PUT /models with action "update": new metadata or serving settings."""

    id: ModelId
    action: Literal["update"]
    version: Optional[str] = None

    def changes(self, kind: str) -> dict:
        changes = self.sections_for(kind)
        if self.version is not None:
            changes["version"] = self.version
        return changes


class DownloadModel(_Strict):
    """POST /models/{id}/download: where to download the model's files from."""

    url: str = Field(description="An http(s) URL, a Hugging Face resolve URL, or hf://org/repo/file.")
    mmprojUrl: Optional[str] = Field(None, description="A vlm's projector (mmproj GGUF), same forms.")


def parse_bool(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise SchemaError(f"Query parameter '{name}' must be true or false, got '{raw}'")


def parse_kind(raw: str | None) -> str | None:
    if raw is not None and raw not in LISTED_KINDS:
        raise SchemaError(f"Query parameter 'kind' has unknown value '{raw}'; use one of: {', '.join(LISTED_KINDS)}")
    return raw


# ---- responses (for the OpenAPI document) ----------------------------------------------

class AdapterInfo(BaseModel):
    base: str = Field(description="The id of the model the adapter was trained on, and is served on.")
    rank: int
    alpha: float
    job_id: Optional[str] = Field(None, description="The fine-tuning job that made it.")


class ModelView(BaseModel):
    """A model in the registry."""

    id: str
    version: str
    kind: Literal[LISTED_KINDS]
    readyToUse: bool = Field(description="True once every file the kind needs is complete and verified.")
    createdAt: int = Field(description="Milliseconds since the epoch.")
    totalSize: Optional[int] = Field(None, description="Bytes of the committed files.")
    sha256: Optional[str] = Field(None, description="The main file's sha256, once ready.")
    gguf: Optional[GgufSettings] = None
    onnx: Optional[OnnxSettings] = None
    adapter: Optional[AdapterInfo] = Field(None, description="A LoRA adapter's base, rank and alpha.")
    registeredPath: Optional[str] = Field(
        None, description="Where the model's file (or folder) lies when it was registered by path "
                          "instead of stored; deleting the model leaves it there.")
    notReadyReason: Optional[str] = Field(
        None, description="Why a model registered by path is not ready (its file changed or is gone).")


class ModelList(BaseModel):
    data: list[ModelView]


class DownloadProgress(BaseModel):
    """One Server-Sent Event of a download: progress, the projector's progress, done, or error."""

    size: Optional[int] = None
    totalSize: Optional[int] = None
    mmproj: Optional[dict[str, int]] = None
    done: Optional[bool] = None
    model: Optional[ModelView] = None
    error: Optional[dict[str, Any]] = None


class UploadForm(BaseModel):
    """multipart/form-data: the model file, and a vlm's projector."""

    file: Optional[bytes] = Field(None, json_schema_extra={"format": "binary"})
    mmproj: Optional[bytes] = Field(None, json_schema_extra={"format": "binary"})
