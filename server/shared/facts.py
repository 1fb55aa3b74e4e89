"""Facts that the server and the operator share: one definition of each.

Kinds of model, ONNX execution providers, chat-template hints, the model id rules, the
server's port, the Kubernetes API group of the Model resource, the labels and
annotations of its children, and the rule that a vlm needs its projector. The CRD in
crds/ states the same rules to the API server; a test compares the two.
"""
from __future__ import annotations

import re

# ---- models --------------------------------------------------------------------------

KINDS = ("llm", "vlm", "embed", "onnx")
# A LoRA adapter that fine-tuning made (a GGUF LoRA): a model of its own kind in the store,
# never loaded alone, always with its base. Not a kind the Model resource or uploads take.
ADAPTER_KIND = "adapter"
# The kinds that generate text (chat and completions); embed and onnx do not.
GENERATIVE_KINDS = ("llm", "vlm")
# The registry's onnx.executionProvider values, and onnxruntime's name for each.
EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# The mModelStore API's chatTemplateHint values; llama.cpp knows each by this name
# (llama_chat_builtin_templates).
CHAT_TEMPLATE_HINTS = (
    "chatml", "llama2", "llama3", "phi3", "mistral-v1", "mistral-v3", "mistral-v7", "gemma",
    "deepseek", "deepseek2", "deepseek3", "command-r", "falcon3", "zephyr", "vicuna",
    "vicuna-orca", "openchat",
)

# gguf.kvCacheType: the types llama.cpp stores the K and V cache in (type_k, type_v), the
# default first. q8_0 and q4_0 are blocks of 32 values with one scale, so a head dimension
# that is a multiple of 32 stores them whole; llama.cpp needs flash attention for a
# quantized V cache.
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
DEFAULT_KV_CACHE_TYPE = "f16"
# The kinds whose engine keeps a KV cache across steps; an embed model's cache lives for
# one batch (and an encoder has none), so the setting does not apply to it.
KV_CACHE_KINDS = GENERATIVE_KINDS
# Silicon Studio's `kv_quantization` (bits) -> the cache type.
_KV_QUANTIZATION_BITS = {8: "q8_0", 4: "q4_0"}


def kv_cache_type_for_bits(bits: object) -> str:
    """The cache type for Silicon Studio's `kv_quantization`: 8 -> q8_0, 4 -> q4_0, and no
    value (None) -> f16, no quantization. ValueError names the values it takes."""
    if bits is None:
        return DEFAULT_KV_CACHE_TYPE
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _KV_QUANTIZATION_BITS:
        raise ValueError(f"kv_quantization must be 4 or 8 (or omitted for none), got {bits!r}")
    return _KV_QUANTIZATION_BITS[bits]


def kv_cache_problem(kind: object, kv_cache_type: object) -> str | None:
    """Why this kv cache type cannot go with this kind, or None; callers put the field's
    name in front ("Field 'gguf.kvCacheType' ...", "spec.gguf.kvCacheType ...")."""
    if kv_cache_type is None:
        return None
    if kv_cache_type not in KV_CACHE_TYPES:
        return f"must be one of {', '.join(KV_CACHE_TYPES)} (got {kv_cache_type!r})"
    if kind not in KV_CACHE_KINDS and kv_cache_type != DEFAULT_KV_CACHE_TYPE:
        return (f"applies only to kinds {' and '.join(KV_CACHE_KINDS)}: an {kind} model keeps "
                "no KV cache between batches")
    return None

# ---- model ids (the mModelStore API's rules) -----------------------------------------

ID_PATTERN = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_ID_LENGTH = 255


def id_problem(model_id: object) -> str | None:
    """Why `model_id` is not a valid id, or None when it is."""
    if not isinstance(model_id, str) or not model_id:
        return "must be a non-empty string"
    if len(model_id) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if not ID_PATTERN.match(model_id):
        return "may contain only letters, digits, '-', '_' and '.'"
    if model_id[0] in ".-":
        return "cannot start with '.' or '-'"
    if ".." in model_id:
        return "cannot contain '..'"
    return None


def vlm_problem(model_id: str, kind: str, has_projector_source: bool, projector_on_disk: bool,
                field: str = "mmprojUrl") -> str | None:
    """Why this kind and projector cannot go together, or None: a vlm needs its projector
    (an mmproj GGUF), and only a vlm takes one. `field` is what the caller calls the
    projector's source, so the message says what to send."""
    if has_projector_source and kind != "vlm":
        return f"Field '{field}' applies only to kind 'vlm'; model '{model_id}' is '{kind}'"
    if kind == "vlm" and not has_projector_source and not projector_on_disk:
        return (f"Model '{model_id}' is a vlm and has no projector yet: "
                f"send '{field}' with the mmproj file's URL")
    return None


# ---- the server ----------------------------------------------------------------------

DEFAULT_PORT = 8083
# Decode slots per GGUF model (`--parallel`): also the operator's default of how many
# requests in flight one pod should carry (spec.autoscaling.targetRequests).
DEFAULT_PARALLEL = 4
# The gauges of requests in flight that each server exports on /metrics, by model: the
# autoscaler reads them (running + waiting).
METRIC_RUNNING = "modelyard_active_sequences"
METRIC_WAITING = "modelyard_queue_depth"

# ---- the Model resource and its children ---------------------------------------------

GROUP = "modelyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Model"
PLURAL = "models"

# Labels every child carries. The model label holds the DNS-safe base name (a label value
# is limited to 63 characters; the full name is in the ownerReference).
LABEL_MODEL = f"{GROUP}/model"
LABEL_SOURCE_HASH = f"{GROUP}/source-hash"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelyard-operator"
ANNOTATION_POD_SPEC_HASH = f"{GROUP}/pod-spec-hash"
ANNOTATION_SOURCE_HASH = f"{GROUP}/source-hash"
