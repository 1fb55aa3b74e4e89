"""The Mullama daemon's request bodies, and its response objects for the OpenAPI document."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MullamaPullBody(_Body):
    """POST /api/models/pull."""

    name: str = Field(min_length=1, description="A name from GET /api/defaults, or hf:org/repo[:file.gguf or "
                                                "quantization].")
    stream: bool = Field(False, description="NDJSON progress lines instead of one object at the end.")


class MullamaLoadBody(_Body):
    """POST /api/models/load."""

    alias: str = Field(min_length=1, description="The model's name (a registry id or name:tag).")
    path: Optional[str] = Field(None, description="A GGUF file on the server's disk to register under `alias` "
                                                  "(referenced, not copied).")
    gpu_layers: Optional[int] = Field(None, ge=-1, description="Layers to offload to the GPU; default: the "
                                                               "registry's gguf.initGpuLayerSize, else 0.")
    context_size: Optional[int] = Field(None, ge=16, le=1 << 20,
                                        description="Context tokens per slot; default: the registry's "
                                                    "gguf.initContextSize.")
    mmproj: Optional[str] = Field(None, description="With `path`: the vision projector's GGUF file.")
    set_default: bool = Field(False, description="Requests that name no model use this one.")


# ---- responses (the document's fields; Modelyard's additions are marked) ------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class MullamaModelEntry(_Out):
    alias: str
    path: str
    parameters: Optional[int] = None
    context_size: Optional[int] = None
    gpu_layers: int = 0
    is_default: bool = False
    active_requests: int = 0
    loaded: bool = Field(False, description="Modelyard: whether the model is in memory.")
    kind: str = Field(description="Modelyard: llm, vlm or embed.")


class MullamaCapabilities(_Out):
    vision: bool
    tools: bool
    thinking: bool
    json_: bool = Field(alias="json")


class MullamaModelDetail(MullamaModelEntry):
    architecture: str
    vocab_size: Optional[int] = None
    capabilities: MullamaCapabilities


class MullamaModelList(_Out):
    models: list[MullamaModelEntry]


class MullamaPullResult(_Out):
    status: str
    model: str
    repo: str
    size_bytes: int


class MullamaLoadResult(_Out):
    status: str
    alias: str
    parameters: Optional[int] = None
    context_size: Optional[int] = None
    gpu_layers: int = 0


class MullamaStatusResult(_Out):
    status: str
    alias: str


class MullamaStats(_Out):
    requests_total: int
    tokens_generated: int
    active_requests: int
    gpu_available: bool
    memory_used_bytes: int
    memory_total_bytes: int


class MullamaSystemStatus(_Out):
    version: str
    uptime_secs: int
    models_loaded: int
    http_endpoint: str
    ipc_endpoint: Optional[str] = None
    default_model: Optional[str] = None
    stats: MullamaStats


class MullamaStatus(_Out):
    status: str
    version: str
    uptime_secs: int
    models_loaded: int
    active_requests: int


class MullamaDefaultEntry(_Out):
    name: str
    description: str
    size_hint: str
    tags: list[str]
    from_: str = Field(alias="from")
    has_thinking: bool
    has_vision: bool
    has_tools: bool
