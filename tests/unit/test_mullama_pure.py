"""The pure parts of the Mullama API and of CORS: what a pull's name means, how pull progress
reads in Mullama's lines, the capability flags, and which origins a pattern allows."""
from __future__ import annotations

import pytest

from modelyard.server.api.mullama import catalogue
from modelyard.server.http.cors import LOCAL_ORIGINS, origin_allowed
from modelyard.server.registry import hub
from modelyard.server.registry.errors import FetchError
from modelyard.server.shared.facts import id_problem


@pytest.mark.parametrize("name, spec", [
    ("qwen2.5-0.5b", catalogue.Spec("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", quant="Q4_K_M")),
    ("hf:org/repo", catalogue.Spec("hf.co__org__repo", "org/repo")),
    ("hf:org/repo:Q8_0", catalogue.Spec("hf.co__org__repo--Q8_0", "org/repo", quant="Q8_0")),
    ("hf:org/repo:Model-Q4_K_M.gguf", catalogue.Spec("hf.co__org__repo--Model-Q4_K_M", "org/repo",
                                                      filename="Model-Q4_K_M.gguf")),
    ("hf:org/repo:sub/x.GGUF", catalogue.Spec("hf.co__org__repo--x", "org/repo", filename="sub/x.GGUF")),
])
def test_pull_names(name, spec):
    assert catalogue.parse_spec(name) == spec
    assert id_problem(spec.model_id) is None


@pytest.mark.parametrize("name, code", [("llama9", 404), ("hf:", 400), ("hf:org", 400), ("hf:org/", 400),
                                        ("hf:a/b/c", 400), ("org/repo", 404)])
def test_bad_pull_names(name, code):
    with pytest.raises(catalogue.SpecError) as e:
        catalogue.parse_spec(name)
    assert e.value.code == code


def test_every_catalogue_entry_is_a_valid_id_of_a_known_kind():
    for d in catalogue.DEFAULTS:
        assert id_problem(d.name) is None and d.kind in ("llm", "vlm", "embed")
        assert catalogue.parse_spec(d.name).model_id == d.name
        assert d.has_vision == (d.kind == "vlm")


def test_pull_progress_counts_all_files_and_drops_ollamas_other_steps():
    p = catalogue.PullProgress("m", {"model": 300, "mmproj": 100})
    assert p.line({"status": "pulling manifest"}) is None
    assert p.line({"status": "downloading", "digest": "a", "total": 300, "completed": 150}) == {
        "status": "downloading", "progress": 0.375, "total_bytes": 400, "downloaded_bytes": 150}
    assert p.line({"status": "downloading", "digest": "a", "total": 300, "completed": 300})["downloaded_bytes"] == 300
    assert p.line({"status": "downloading", "digest": "b", "total": 100, "completed": 100})["progress"] == 1.0
    assert p.line({"status": "verifying sha256 digest"}) == {"status": "verifying"}
    assert p.line({"status": "writing manifest"}) is None
    assert p.line({"status": "success"}) == {"status": "success", "model": "m"}
    # sizes the listing did not give come from the events
    q = catalogue.PullProgress("m", {"model": None})
    assert q.line({"status": "downloading", "digest": "a", "total": 10, "completed": 5})["total_bytes"] == 10


def test_capabilities():
    assert catalogue.capabilities("llm", "{% if tools %}..{% endif %}<think>") == {
        "vision": False, "tools": True, "thinking": True, "json": True}
    assert catalogue.capabilities("vlm", "")["vision"] is True
    assert catalogue.capabilities("embed", "tools <think>") == {
        "vision": False, "tools": False, "thinking": False, "json": False}


def test_pick_file_names_the_file_and_keeps_the_projector():
    files = [hub.RepoFile("a-Q8_0.gguf", 1), hub.RepoFile("sub/b-F16.gguf", 2), hub.RepoFile("mmproj-f16.gguf", 3)]
    assert hub.pick_file(files, "b-F16.gguf") == hub.Choice(files[1], files[2])
    assert hub.pick_file(files, "a-Q8_0.gguf").model == files[0]
    with pytest.raises(FetchError) as e:
        hub.pick_file(files, "c.gguf")
    assert e.value.code == 404 and "a-Q8_0.gguf" in str(e.value)
    with pytest.raises(FetchError) as e:
        hub.pick_file(files, "mmproj-f16.gguf")
    assert e.value.code == 400


@pytest.mark.parametrize("origin, allowed", [
    ("http://localhost", True), ("http://localhost:5173", True), ("https://127.0.0.1:8443", True),
    ("http://[::1]:3000", True), ("HTTP://LOCALHOST:1", True),
    ("http://localhost.evil.example", False), ("http://localhost:1.evil.example", False),
    ("http://evil.example", False), ("null", False), ("http://localhost:*", False),
    ("http://user@localhost", False), ("http://localhost/path", False), ("ftp://localhost", False),
])
def test_local_origins(origin, allowed):
    assert origin_allowed(origin, LOCAL_ORIGINS) is allowed


@pytest.mark.parametrize("origin, allowed", [
    ("https://app.example.com", True), ("https://app.example.com:8443", False), ("http://app.example.com", False),
    ("https://a.b.tools.example", True), ("https://tools.example", False), ("https://eviltools.example", False),
    ("app://anything", True), ("http://devbox:9", True), ("http://devbox", True), ("https://devbox:9", False),
])
def test_configured_origins(origin, allowed):
    patterns = ("https://app.example.com", "https://*.tools.example", "app://*", "http://devbox:*")
    assert origin_allowed(origin, patterns) is allowed
    assert origin_allowed(origin, ("*",)) is True
