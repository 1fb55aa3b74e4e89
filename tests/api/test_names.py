"""Ollama's names and the registry's ids: one mapping, both ways."""
from __future__ import annotations

import pytest

from modelyard.server.shared import names
from modelyard.server.shared.facts import id_problem


@pytest.mark.parametrize("name, model_id", [
    ("llama3.2:1b", "llama3.2--1b"), ("llama3.2:latest", "llama3.2"), ("llama3.2", "llama3.2"),
    ("qwen2.5-coder:7b-instruct-q4_K_M", "qwen2.5-coder--7b-instruct-q4_K_M"),
])
def test_names_map_to_valid_ids_and_back(name, model_id):
    assert names.to_id(name) == model_id
    assert id_problem(model_id) is None
    shown = names.to_name(model_id)
    assert names.to_id(shown) == model_id
    assert shown == (name if ":" in name and not name.endswith(":latest") else model_id + ":latest")
