"""Ollama's own Go client (github.com/ollama/ollama/api, what the `ollama` CLI is built on),
unchanged, against a real gunicorn: what `ollama create` does with a local GGUF (the blob
streamed chunked, with no Content-Length, then a create from it), and what `ollama show` and
`ollama list` decode of the result (issue 20: items 1, 2 and 3).

The Go program (tests/clients/ollama_go) is built once per machine into the cache by
tools/clients/build.sh; the tests skip when the machine has no Go. A chunked body over
--max-upload-size: tests/registry/test_chunked_uploads.py.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import httpx
import pytest

from clients import ollama_go_client as ollama_go
from modelyard.server.api.ollama import models
from conftest import AUTH, KEY


@pytest.fixture(scope="session")
def go_client() -> Path:
    return ollama_go.build()


def run(go_client: Path, server, *args: str) -> dict:
    return ollama_go.run(go_client, server.url, KEY, *args)


def parameter_count(path: Path) -> int:
    """The tensors' elements, counted by the gguf package (not by the server's reader)."""
    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def test_create_from_a_chunked_blob_is_an_embedding_model_with_its_size(go_client, server, model_files):
    path = model_files["embed"]  # BERT, mean pooling (bert.pooling_type), no general.size_label
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    got = run(go_client, server, "create-blob", str(path))
    assert got == {"digest": digest}, got  # was a 411: the CLI streams the file chunked
    assert httpx.head(f"{server.url}/api/blobs/{digest}", headers=AUTH).status_code == 200

    got = run(go_client, server, "create", "go-embed", "embed.gguf", digest)
    assert got.get("statuses", [])[-1:] == ["success"], got

    show = run(go_client, server, "show", "go-embed")
    assert show["model_info"]["bert.pooling_type"] == 1
    assert show["capabilities"] == ["embedding"]  # was ["completion"]
    count = parameter_count(path)
    assert 1_000_000 < count < 10_000_000
    size = f"{count / 1e6:.2f}M"  # Ollama's format.HumanNumber for millions
    assert show["details"]["parameter_size"] == size  # was ""

    listed = {m["name"]: m for m in run(go_client, server, "list")["models"]}
    assert listed["go-embed:latest"]["details"]["parameter_size"] == size

    # and it embeds (it was refused as "of kind llm")
    got = run(go_client, server, "embed", "go-embed", "hello")
    assert len(got["embeddings"]) == 1 and len(got["embeddings"][0]) == 64, got


def test_a_chat_model_from_a_chunked_blob_keeps_completion(go_client, server, model_files):
    path = model_files["plain"]
    digest = run(go_client, server, "create-blob", str(path))["digest"]
    run(go_client, server, "create", "go-chat", "plain.gguf", digest)
    show = run(go_client, server, "show", "go-chat")
    assert show["capabilities"][0] == "completion" and "embedding" not in show["capabilities"]
    assert show["details"]["parameter_size"].endswith("M")


# ---- the pure rules, against Ollama's own ----------------------------------------------

@pytest.mark.parametrize("count, text", [  # ollama's format/format_test.go TestHumanNumber
    (0, "0"), (999, "999"), (1000, "1K"), (1001, "1K"), (1_000_000, "1M"), (125_000_000, "125M"),
    (500_500_000, "500.50M"), (500_550_000, "500.55M"), (1_000_000_000, "1B"), (2_800_000_000, "2.8B"),
    (2_850_000_000, "2.9B"), (1_000_000_000_000, "1000B"),
])
def test_human_number_is_ollamas(count, text):
    assert models.human_number(count) == text


def test_parameter_size_prefers_the_size_label():
    assert models.parameter_size({"general.size_label": "1B", "general.parameter_count": 1_235_814_400}) == "1B"
    assert models.parameter_size({"general.parameter_count": 1_235_814_400}) == "1.2B"
    assert models.parameter_size({}) == ""


def test_capabilities_follow_ollamas_rules():
    llama = {"general.architecture": "llama"}
    go_template = "{{ if .Tools }}{{ .Tools }}{{ end }}{{ if .Suffix }}<fim>{{ .Suffix }}{{ end }}"
    assert models.capabilities("llm", llama, go_template) == ["completion", "tools", "insert"]
    assert models.capabilities("llm", llama, "{%- if tools %}<think>{% endif %}") == ["completion", "tools", "thinking"]
    assert models.capabilities("llm", llama, "You have tools and a suffix.") == ["completion"]  # prose, not names
    assert models.capabilities("embed", {**llama, "llama.pooling_type": 1}, "") == ["embedding"]
    assert models.capabilities("vlm", llama, "") == ["completion", "vision"]
    assert models.capabilities("llm", {"general.architecture": "gemma3", "gemma3.vision.block_count": 27}, "") \
        == ["completion", "vision"]
