"""The pure parts of fetching: reading sources, the vlm projector rule, error shapes."""
from __future__ import annotations

import pytest

from modelyard.server.registry import fetch
from modelyard.server.shared import facts
from modelyard.server.registry import store as st


@pytest.mark.parametrize("text, repo_id, filename, revision", [
    ("https://huggingface.co/lmstudio-community/SmolLM2-360M-Instruct-GGUF/resolve/main/"
     "SmolLM2-360M-Instruct-Q8_0.gguf?download=true",
     "lmstudio-community/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct-Q8_0.gguf", "main"),
    ("https://hf.co/org/repo/resolve/refs%2Fpr%2F3/sub/dir/m.gguf", "org/repo", "sub/dir/m.gguf",
     "refs/pr/3"),
    ("http://mirror.local:8080/org/repo/resolve/v2/m.gguf", "org/repo", "m.gguf", "v2"),
    ("hf://org/repo/m.gguf", "org/repo", "m.gguf", "rev-x"),
    ("hf://org/repo/a/b.onnx", "org/repo", "a/b.onnx", "rev-x"),
])
def test_hugging_face_sources(text, repo_id, filename, revision):
    source = fetch.parse_source(text, revision="rev-x", hf_endpoint="http://mirror.local:8080")
    assert source.is_hf
    assert (source.repo_id, source.filename, source.revision) == (repo_id, filename, revision)


def test_hf_uri_defaults_to_main():
    assert fetch.parse_source("hf://org/repo/m.gguf").revision == "main"


@pytest.mark.parametrize("text", [
    "https://example.com/models/m.gguf",
    "https://example.com/org/repo/resolve/main/m.gguf",  # not a hub host: a plain URL
    "https://huggingface.co/datasets/org/repo/resolve/main/m.gguf",
])
def test_plain_urls(text):
    source = fetch.parse_source(text)
    assert not source.is_hf and source.url == text


@pytest.mark.parametrize("text", ["ftp://x/y", "hf://org/repo", "hf://org//m.gguf", "m.gguf", ""])
def test_invalid_sources(text):
    with pytest.raises(ValueError):
        fetch.parse_source(text)


def test_plan_sources_names_the_field():
    with pytest.raises(ValueError, match="Field 'mmprojUrl' is invalid"):
        fetch.plan_sources("hf://a/b/c.gguf", "file:///etc/passwd")
    assert set(fetch.plan_sources("hf://a/b/c.gguf", "hf://a/b/p.gguf")) == {"model", "mmproj"}


@pytest.mark.parametrize("kind, has_source, on_disk, problem", [
    ("llm", False, False, None),
    ("llm", True, False, "applies only to kind 'vlm'"),
    ("vlm", True, False, None),
    ("vlm", False, True, None),
    ("vlm", False, False, "send 'mmprojUrl'"),
])
def test_vlm_rule(kind, has_source, on_disk, problem):
    got = facts.vlm_problem("m", kind, has_source, on_disk)
    assert got is None if problem is None else problem in got


@pytest.mark.parametrize("exc, code", [
    (fetch.FetchError("x", 404), 404),
    (st.InvalidFile("sha256 mismatch"), 400),
    (st.Cancelled("cancelled"), 409),
    (RuntimeError("boom"), 500),
])
def test_error_events(exc, code):
    event = fetch.error_event(exc)
    assert event["error"]["code"] == code
    assert str(exc) in event["error"]["message"]


def test_content_range():
    assert fetch._content_range("bytes 100-199/200") == (100, 200)
    assert fetch._content_range("bytes */200") == (None, 200)
    assert fetch._content_range(None) == (None, None)


def test_progress_is_throttled_with_a_final_event():
    sent = []
    report = fetch._Reporter(sent.append, "mmproj")
    for size in range(0, 101):
        report(size, 100)
    assert sent[0] == {"mmproj": {"size": 0, "totalSize": 100}}
    assert sent[-1] == {"mmproj": {"size": 100, "totalSize": 100}}
    assert len(sent) <= 3
