"""Ollama's model names (`llama3.2:1b`) and the registry's ids, which cannot hold ':'.

Every API takes either form where it takes a model: the dispatcher maps names to ids.

One mapping, both ways: the tag goes after a double dash (`llama3.2:1b` is the id
`llama3.2--1b`), and the tag `latest` is the bare name (`name` and `name:latest` are one
model). An id without a double dash is shown as `id:latest`. Pure functions.
"""
from __future__ import annotations

TAG_SEPARATOR = "--"
DEFAULT_TAG = "latest"


def to_id(name: str) -> str:
    """The registry id of an Ollama name; ids themselves pass through unchanged."""
    base, sep, tag = name.strip().rpartition(":")
    if not sep or "/" in tag:  # no tag (a ':' in a host:port belongs to the name)
        return name.strip()
    if tag == DEFAULT_TAG:
        return base
    return f"{base}{TAG_SEPARATOR}{tag}"


def to_name(model_id: str) -> str:
    base, sep, tag = model_id.rpartition(TAG_SEPARATOR)
    if sep and base and tag:
        return f"{base}:{tag}"
    return f"{model_id}:{DEFAULT_TAG}"
