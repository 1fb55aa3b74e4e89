"""Validation of registry request bodies (seed 000). Pure: dicts in, dicts or errors out."""
from __future__ import annotations

from modelyard.server.shared.facts import CHAT_TEMPLATE_HINTS
from modelyard.server.shared.facts import id_problem
from modelyard.server.registry.store import KINDS

EXECUTION_PROVIDERS = ("cpu", "cuda", "coreml", "tensorrt")


class SchemaError(ValueError):
    """A body that does not fit; the message names the field."""


def _expect(body: dict, field: str, types, type_name: str, required: bool = False):
    if field not in body or body[field] is None:
        if required:
            raise SchemaError(f"Missing required field '{field}'")
        return None
    value = body[field]
    # bool is an int in Python; a JSON true is never a size.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise SchemaError(f"Field '{field}' must be {type_name}, got {type(value).__name__}")
    if not isinstance(value, types):
        raise SchemaError(f"Field '{field}' must be {type_name}, got {_json_type(value)}")
    return value


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _choice(section: dict, field: str, allowed: tuple, name: str):
    """A string field that must be one of `allowed`; `name` is how errors call it."""
    value = _expect(section, field, str, "a string")
    if value is not None and value not in allowed:
        raise SchemaError(
            f"Field '{name}' has unknown value '{value}'; use one of: {', '.join(allowed)}"
        )
    return value


def _gguf(section: dict, prefix: str = "gguf") -> dict:
    out = {}
    hint = _choice(section, "chatTemplateHint", CHAT_TEMPLATE_HINTS, f"{prefix}.chatTemplateHint")
    if hint is not None:
        out["chatTemplateHint"] = hint
    for field in ("initContextSize", "initGpuLayerSize"):
        value = _expect(section, field, int, "an integer")
        if value is not None:
            if value < 0:
                raise SchemaError(f"Field '{prefix}.{field}' must be >= 0")
            out[field] = value
    _no_unknown(section, ("chatTemplateHint", "initContextSize", "initGpuLayerSize"), prefix)
    return out


def _onnx(section: dict) -> dict:
    out = {}
    provider = _choice(section, "executionProvider", EXECUTION_PROVIDERS, "onnx.executionProvider")
    if provider is not None:
        out["executionProvider"] = provider
    _no_unknown(section, ("executionProvider",), "onnx")
    return out


def _no_unknown(section: dict, known: tuple, prefix: str) -> None:
    extra = sorted(set(section) - set(known))
    if extra:
        raise SchemaError(
            f"Unknown field '{prefix}.{extra[0]}'; known fields: {', '.join(known)}"
        )


def _sections(body: dict, kind: str | None) -> dict:
    out = {}
    gguf = _expect(body, "gguf", dict, "an object")
    onnx = _expect(body, "onnx", dict, "an object")
    if gguf is not None:
        if kind == "onnx":
            raise SchemaError("Field 'gguf' does not apply to kind 'onnx'; use 'onnx'")
        out["gguf"] = _gguf(gguf)
    if onnx is not None:
        if kind is not None and kind != "onnx":
            raise SchemaError(f"Field 'onnx' does not apply to kind '{kind}'; use 'gguf'")
        out["onnx"] = _onnx(onnx)
    return out


def _model_id(body: dict) -> str:
    model_id = _expect(body, "id", str, "a string", required=True)
    problem = id_problem(model_id)
    if problem:
        raise SchemaError(f"Field 'id' is invalid: it {problem}")
    return model_id


def parse_create(body: dict) -> dict:
    """POST /models: id, version, kind, and the kind's section."""
    model_id = _model_id(body)
    version = _expect(body, "version", str, "a string", required=True)
    _expect(body, "kind", str, "a string", required=True)
    kind = _choice(body, "kind", KINDS, "kind")
    _no_unknown(body, ("id", "version", "kind", "gguf", "onnx"), "body")
    return {"id": model_id, "version": version, "kind": kind, **_sections(body, kind)}


def parse_update(body: dict, kind_of) -> tuple[str, dict]:
    """PUT /models with action "update". `kind_of(id)` gives the stored kind (may raise)."""
    model_id = _model_id(body)
    action = _expect(body, "action", str, "a string", required=True)
    if action != "update":
        raise SchemaError(f"Field 'action' must be \"update\", got \"{action}\"")
    _no_unknown(body, ("id", "action", "version", "gguf", "onnx"), "body")
    changes = _sections(body, kind_of(model_id))
    version = _expect(body, "version", str, "a string")
    if version is not None:
        changes["version"] = version
    return model_id, changes


def parse_download(body: dict) -> tuple[str, str | None]:
    """POST /models/{id}/download: url, and mmprojUrl for a vlm."""
    url = _expect(body, "url", str, "a string", required=True)
    mmproj = _expect(body, "mmprojUrl", str, "a string")
    _no_unknown(body, ("url", "mmprojUrl"), "body")
    return url, mmproj


def parse_bool(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise SchemaError(f"Query parameter '{name}' must be true or false, got '{raw}'")


def parse_kind(raw: str | None) -> str | None:
    if raw is not None and raw not in KINDS:
        raise SchemaError(f"Query parameter 'kind' has unknown value '{raw}'; use one of: {', '.join(KINDS)}")
    return raw
