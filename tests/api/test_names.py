"""Ollama's names and the registry's ids: one mapping, both ways."""
from __future__ import annotations

import pytest

from modelyard.server.shared import names
from modelyard.server.shared.facts import id_problem


@pytest.mark.parametrize("name, model_id", [
    ("llama3.2:1b", "llama3.2--1b"), ("llama3.2:latest", "llama3.2"), ("llama3.2", "llama3.2"),
    ("qwen2.5-coder:7b-instruct-q4_K_M", "qwen2.5-coder--7b-instruct-q4_K_M"),
    ("hf.co/org/repo:Q4_K_M", "hf.co__org__repo--Q4_K_M"),
    ("me/mine:v2", "me__mine--v2"),
    ("127.0.0.1:5000/library/tiny:1", "127.0.0.1_5000__library__tiny--1"),
])
def test_names_map_to_valid_ids_and_back(name, model_id):
    assert names.to_id(name) == model_id
    assert id_problem(model_id) is None
    shown = names.to_name(model_id)
    assert names.to_id(shown) == model_id
    assert shown == (name if ":" in name and not name.endswith(":latest") else model_id + ":latest")


@pytest.mark.parametrize("name, short", [
    ("registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"), ("library/llama3.2", "llama3.2:latest"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
])
def test_default_registry_and_namespace_are_dropped(name, short):
    assert names.to_name(names.to_id(name)) == short
    assert id_problem(names.to_id(name)) is None


@pytest.mark.parametrize("name, ref", [
    ("llama3.2:1b", ("registry.ollama.ai", "library/llama3.2", "1b")),
    ("hf.co/org/repo", ("hf.co", "org/repo", "latest")),
    ("127.0.0.1:5000/ns/m:t", ("127.0.0.1:5000", "ns/m", "t")),
])
def test_reference_fills_in_the_defaults(name, ref):
    assert names.reference(name) == ref
