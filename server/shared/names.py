"""Ollama's model names (`llama3.2:1b`, `hf.co/org/repo:Q4_K_M`, `host:5000/ns/model:tag`)
and the registry's ids, which hold only letters, digits, '-', '_' and '.'.

Every API takes either form where it takes a model: the dispatcher maps names to ids.

One mapping, both ways (pure functions):
- the tag goes after a double dash (`llama3.2:1b` is the id `llama3.2--1b`), and the tag
  `latest` is the bare name (`name` and `name:latest` are one model);
- each '/' between the parts of a longer name is a double underscore
  (`hf.co/org/repo:Q4_K_M` is `hf.co__org__repo--Q4_K_M`);
- a registry host's port, in a three-part name, follows a single underscore
  (`127.0.0.1:5000/library/tiny:1` is `127.0.0.1_5000__library__tiny--1`);
- Ollama's default registry and namespace are dropped, as `ollama list` shows them
  (`registry.ollama.ai/library/llama3.2` is `llama3.2`).
An id without a double dash is shown as `id:latest`.
"""
from __future__ import annotations

import re

TAG_SEPARATOR = "--"
PART_SEPARATOR = "__"
DEFAULT_TAG = "latest"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
_HOST_PORT = re.compile(r"^(.+)_(\d{1,5})$")


def _shortest(parts: list[str]) -> list[str]:
    if len(parts) == 3 and parts[0] == DEFAULT_REGISTRY:
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == DEFAULT_NAMESPACE:
        parts = parts[1:]
    return parts


def to_id(name: str) -> str:
    """The registry id of an Ollama name; ids themselves pass through unchanged."""
    name = name.strip()
    parts = name.split("/")
    base, sep, tag = parts[-1].rpartition(":")
    if sep and base:
        parts[-1] = base
    else:
        tag = ""
    parts = _shortest(parts)
    if len(parts) == 3:
        parts[0] = parts[0].replace(":", "_", 1)  # host:port
    model_id = PART_SEPARATOR.join(parts)
    if tag and tag != DEFAULT_TAG:
        model_id += TAG_SEPARATOR + tag
    return model_id


def to_name(model_id: str) -> str:
    base, sep, tag = model_id.rpartition(TAG_SEPARATOR)
    if not (sep and base and tag):
        base, tag = model_id, DEFAULT_TAG
    parts = base.split(PART_SEPARATOR)
    if len(parts) == 3 and (m := _HOST_PORT.match(parts[0])):
        parts[0] = f"{m.group(1)}:{m.group(2)}"
    return "/".join(parts) + ":" + tag


def short_name(model_id: str) -> str:
    """The name without the implied `:latest` (Mullama's aliases: `llama3.2:1b`, `smollm2`)."""
    return to_name(model_id).removesuffix(":" + DEFAULT_TAG)


def reference(name: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag) of an Ollama name, with the defaults filled in:
    `llama3.2:1b` is (registry.ollama.ai, library/llama3.2, 1b)."""
    shown = to_name(to_id(name))
    path, _, tag = shown.rpartition(":")
    parts = path.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_NAMESPACE] + parts
    if len(parts) == 2:
        parts = [DEFAULT_REGISTRY] + parts
    return parts[0], "/".join(parts[1:]), tag
