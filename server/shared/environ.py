"""The one reader of MODELYARD_* environment variables, for the server and the operator.

Each program declares its settings as a dataclass whose fields carry a `help`; a field
named `max_body_size` is read from MODELYARD_MAX_BODY_SIZE and parsed by its default's type.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

PREFIX = "MODELYARD_"


def variable(field_name: str) -> str:
    return PREFIX + field_name.upper()


def read(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of dataclass `cls` that the environment sets, parsed; unset and empty skip."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = environ.get(variable(f.name))
        if raw is not None and raw != "":
            values[f.name] = parse(f, raw)
    return values


def parse(f: dataclasses.Field, raw: str) -> Any:
    """`raw` as the type of the field's default: JSON for dicts, lists of words for lists."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kind = f.metadata.get("type") or type(default)
    if kind in (dict,):
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError(f"{variable(f.name)} must be a JSON object")
        return value
    if kind is list:
        if raw.lstrip()[:1] in ("[", "{"):
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError(f"{variable(f.name)} must be a JSON array")
            return value
        return [p for p in raw.replace(",", " ").split() if p]
    if kind is bool:
        return raw.lower() in ("1", "true", "yes")
    if kind in (int, float):
        return kind(raw)
    return raw
