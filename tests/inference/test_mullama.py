"""The Mullama daemon's API from a plain HTTP client against a real gunicorn: every route with
its documented request and response fields, pulls from the Hugging Face stand-in (parsed
line by line), the shared /api/generate, /api/chat and /api/embeddings in Mullama's shape,
and errors in Mullama's shape on its own routes."""
from __future__ import annotations

import json

import gguf
import httpx
import numpy as np
import pytest

import modelgen
from conftest import AUTH, CTX
from support.hubs import FileHub

REPO = "mullama-org/tiny-GGUF"  # not another module's: the session's store is shared
# The catalogue's entry that the stand-in serves (what /api/defaults/{name}/use pulls).
DEFAULT = "qwen2.5-0.5b"
DEFAULT_REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
THINKING_TEMPLATE = ("{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}"
                     "{% endfor %}<think>")
ERROR_TYPES = {"invalid_request", "not_found", "model_error", "conflict", "internal_error", "overloaded"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("mullama")
    return {
        "Q8_0": modelgen.make_llama_gguf(d / "tiny-Q8_0.gguf", vocab="phi-3", qtype="Q8_0", seed=5).read_bytes(),
        "F16": modelgen.make_llama_gguf(d / "tiny-F16.gguf", vocab="phi-3", qtype="F16", seed=6).read_bytes(),
        # a template that renders tools and opens a thinking block
        "think": modelgen.make_llama_gguf(d / "think-Q8_0.gguf", vocab="phi-3", qtype="Q8_0", seed=7,
                                          chat_template=THINKING_TEMPLATE).read_bytes(),
    }


@pytest.fixture(scope="module")
def hub(files):
    with FileHub() as hub:
        # trickled, so that a pull reports progress more than once
        hub.add_hf(REPO, "tiny-Q8_0.gguf", files["Q8_0"], rate=len(files["Q8_0"]) / 1.5)
        hub.add_hf(REPO, "tiny-F16.gguf", files["F16"])
        hub.add_hf(REPO, "README.md", b"# tiny\n")
        hub.add_hf("mullama-org/think-GGUF", "think-Q8_0.gguf", files["think"])
        hub.add_hf(DEFAULT_REPO, "qwen2.5-0.5b-instruct-q4_k_m.gguf", files["Q8_0"])
        hub.add_hf(DEFAULT_REPO, "qwen2.5-0.5b-instruct-q8_0.gguf", files["F16"])
        yield hub


@pytest.fixture(scope="module")
def srv(start_server, hub, tmp_path_factory):
    """A server of its own: its default model is this module's, and huggingface_hub in it
    reads HF_ENDPOINT at start. Loads by path may name the tests' temporary folders."""
    return start_server("--parallel", "2", "--allow-path", str(tmp_path_factory.getbasetemp()),
                        env={"HF_ENDPOINT": hub.url})


def get(srv, path: str, **kw) -> httpx.Response:
    return httpx.get(srv.url + path, headers=AUTH, timeout=120, **kw)


def post(srv, path: str, body: dict | None = None, **kw) -> httpx.Response:
    return httpx.post(srv.url + path, headers=AUTH, json=body, timeout=120, **kw)


def assert_error(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code"} and error["type"] == type_, error
    assert error["type"] in ERROR_TYPES and error["message"] and isinstance(error["code"], str)
    return error


def reference(data_path) -> gguf.GGUFReader:
    return gguf.GGUFReader(data_path)


# ---- models ---------------------------------------------------------------------------------


def test_without_a_model_and_with_none_loaded_a_request_must_name_one(srv):
    # this module's server is new: nothing loaded, no default (this test runs first)
    assert get(srv, "/api/system/status").json()["default_model"] is None
    for path, body in (("/api/generate", {"prompt": "Hi"}), ("/api/chat", {"messages": [{"role": "user", "content": "Hi"}]}),
                       ("/api/embeddings", {"input": "Hi"})):
        r = post(srv, path, body)
        assert r.status_code == 400, r.text
        assert "'model' is required" in r.json()["error"]  # Ollama's shape on the shared routes


def test_list_models_has_every_ready_gguf_model_with_the_documented_fields(srv, model_files):
    r = get(srv, "/api/models")
    assert r.status_code == 200, r.text
    models = {m["alias"]: m for m in r.json()["models"]}
    # ready GGUF models only: not the ONNX ones, not the one without a file
    assert {"chat", "plain", "embed", "vlm"} <= set(models)
    assert not {"clf", "strings", "pending"} & set(models)
    chat = models["chat"]
    assert {"alias", "path", "parameters", "context_size", "gpu_layers", "is_default",
            "active_requests"} <= set(chat)
    assert chat["path"] == str(srv.store / "models" / "chat" / "model.gguf")
    expected = sum(int(t.n_elements) for t in reference(model_files["chat"]).tensors)
    assert chat["parameters"] == expected
    assert chat["context_size"] == CTX and chat["gpu_layers"] == 0 and chat["active_requests"] == 0


def test_model_details_read_the_gguf(srv, model_files):
    r = get(srv, "/api/models/chat")
    assert r.status_code == 200, r.text
    got = r.json()
    ref = reference(model_files["chat"])
    assert got["alias"] == "chat" and got["architecture"] == "llama"
    assert got["vocab_size"] == len(ref.fields["tokenizer.ggml.tokens"].data)
    assert got["capabilities"] == {"vision": False, "tools": False, "thinking": False, "json": True}
    assert get(srv, "/api/models/vlm").json()["capabilities"]["vision"] is True
    embed = get(srv, "/api/models/embed").json()
    assert embed["architecture"] == "bert" and embed["capabilities"]["json"] is False


def test_capabilities_follow_the_chat_template(srv):
    assert post(srv, "/api/models/pull", {"name": "hf:mullama-org/think-GGUF"}).status_code == 200
    got = get(srv, "/api/models/hf.co__mullama-org__think-GGUF").json()
    assert got["alias"] == "hf.co/mullama-org/think-GGUF"
    assert got["capabilities"] == {"vision": False, "tools": True, "thinking": True, "json": True}


def test_unknown_models_are_404_in_mullamas_shape(srv):
    error = assert_error(get(srv, "/api/models/nothing-here"), 404, "not_found")
    assert error["code"] == "model_not_found" and "nothing-here" in error["message"]
    assert_error(get(srv, "/api/models/clf"), 404, "not_found")  # ONNX: not a daemon model
    assert_error(post(srv, "/api/models/nothing-here/unload"), 404, "not_found")
    assert_error(post(srv, "/api/models/load", {"alias": "nothing-here"}), 404, "not_found")
    assert_error(post(srv, "/api/models/load", {"context_size": 128}), 400, "invalid_request")
    assert_error(post(srv, "/api/models/load", {"alias": "chat", "gpu_layers": "many"}), 400, "invalid_request")


def test_load_then_again_with_the_same_settings_is_a_conflict(srv):
    r = post(srv, "/api/models/load", {"alias": "plain", "context_size": 256, "gpu_layers": 0})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "loaded", "alias": "plain", "parameters": r.json()["parameters"],
                        "context_size": 256, "gpu_layers": 0, "is_default": r.json()["is_default"]}
    assert r.json()["parameters"] > 0
    # the first model loaded is the default until one is set
    assert get(srv, "/api/system/status").json()["default_model"] == "plain"
    error = assert_error(post(srv, "/api/models/load", {"alias": "plain", "context_size": 256}), 409, "conflict")
    assert "already loaded" in error["message"]
    assert_error(post(srv, "/api/models/load", {"alias": "plain"}), 409, "conflict")
    # every API uses it as loaded: a prompt of 300 words does not fit in 256 tokens, and the
    # error says which load chose that context
    r = post(srv, "/v1/completions", {"model": "plain", "prompt": "word " * 300, "max_tokens": 1})
    assert r.status_code == 400 and "256" in r.text and "Mullama load" in r.text, r.text
    # every API's listing shows the settings the model runs with, and who chose them
    listings = {
        "openai": next(m for m in get(srv, "/v1/models").json()["data"] if m["id"] == "plain"),
        "ollama ps": next(m for m in get(srv, "/api/ps").json()["models"] if m["name"].startswith("plain")),
        "ollama tags": next(m for m in get(srv, "/api/tags").json()["models"] if m["name"].startswith("plain")),
        "silicon": next(m for m in get(srv, "/api/engine/models").json() if m["id"] == "plain"),
        "mullama": next(m for m in get(srv, "/api/models").json()["models"] if m["alias"] == "plain"),
    }
    for api, entry in listings.items():
        assert entry["serving"]["context_size"] == 256, api
        assert entry["serving"]["gpu_layers"] == 0 and entry["serving"]["kv_cache_type"] == "f16", api
        assert "Mullama load" in entry["serving"]["set_by"], api
    # other settings reload it: 600 words fit in 768 (not in the registry's 512)
    r = post(srv, "/api/models/load", {"alias": "plain", "context_size": 768})
    assert r.status_code == 200 and r.json()["context_size"] == 768, r.text
    listed = {m["alias"]: m for m in get(srv, "/api/models").json()["models"]}
    assert listed["plain"]["loaded"] is True and listed["plain"]["context_size"] == 768
    r = post(srv, "/v1/completions", {"model": "plain", "prompt": "word " * 600, "max_tokens": 1})
    assert r.status_code == 200, r.text
    # back to the registry's own size, for the other tests
    assert post(srv, "/api/models/load", {"alias": "plain", "context_size": CTX}).status_code == 200


def test_unload_then_unload_again_is_a_conflict(srv):
    assert post(srv, "/api/models/load", {"alias": "chat"}).status_code in (200, 409)
    r = post(srv, "/api/models/chat/unload")
    assert r.status_code == 200 and r.json() == {"status": "unloaded", "alias": "chat"}, r.text
    assert "chat" not in [m["alias"] for m in get(srv, "/api/models").json()["models"] if m["loaded"]]
    assert_error(post(srv, "/api/models/chat/unload"), 409, "conflict")


def test_load_by_path_registers_the_file_where_it_lies_and_delete_leaves_it(srv, model_files, tmp_path):
    own = tmp_path / "mine" / "plain-copy.gguf"
    own.parent.mkdir()
    own.write_bytes(model_files["plain"].read_bytes())
    r = post(srv, "/api/models/load", {"alias": "by-path", "path": str(own), "context_size": CTX})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "loaded" and r.json()["context_size"] == CTX
    got = get(srv, "/api/models/by-path").json()
    assert got["path"] == str(own) and got["loaded"] is True and got["kind"] == "llm"
    assert not (srv.store / "models" / "by-path" / "model.gguf").exists()  # not copied
    # the same weights as the uploaded model: the same greedy answer
    ask = {"prompt": "Once", "raw": True, "max_tokens": 6, "temperature": 0}  # no chat template
    mine, uploaded = (post(srv, "/api/generate", {"model": m, **ask}) for m in ("by-path", "plain"))
    assert mine.status_code == uploaded.status_code == 200, (mine.text, uploaded.text)
    assert mine.json()["response"] == uploaded.json()["response"]
    assert_error(post(srv, "/api/models/load", {"alias": "by-path", "path": str(own), "context_size": CTX}),
                 409, "conflict")
    r = httpx.delete(srv.url + "/api/models/by-path", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "deleted", "alias": "by-path"}, r.text
    assert own.read_bytes() == model_files["plain"].read_bytes()  # the user's file stays
    assert_error(get(srv, "/api/models/by-path"), 404, "not_found")


def test_load_by_path_outside_the_allowed_folders_gets_one_answer(srv, model_files, tmp_path):
    """Issue 19, item 5: the same 403 whether the path is a file, a folder, nothing, or a link
    from an allowed folder to outside; a projector path is checked the same way."""
    (tmp_path / "link.gguf").symlink_to("/etc/hostname")
    answers = set()
    for path in ("/etc/passwd", "/etc", "/nonexistent/x.gguf", str(tmp_path / "link.gguf")):
        for body in ({"alias": "outside", "path": path},
                     {"alias": "outside", "path": str(model_files["vlm-text"]), "mmproj": path}):
            error = assert_error(post(srv, "/api/models/load", body), 403, "invalid_request")
            answers.add(error["message"].replace(path, "<path>"))
    assert len(answers) == 2, answers  # one for the model's path, one for the projector's
    assert all("--allow-path" in a for a in answers)


def test_load_by_path_with_a_projector_is_a_vlm(srv, model_files):
    r = post(srv, "/api/models/load", {"alias": "vlm-by-path", "path": str(model_files["vlm-text"]),
                                       "mmproj": str(model_files["mmproj"])})
    assert r.status_code == 200, r.text
    got = get(srv, "/api/models/vlm-by-path").json()
    assert got["kind"] == "vlm" and got["capabilities"]["vision"] is True
    assert post(srv, "/api/models/vlm-by-path/unload").status_code == 200


def test_load_by_path_refuses_what_is_not_a_model(srv, model_files, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    error = assert_error(post(srv, "/api/models/load", {"alias": "junk", "path": str(junk)}), 400, "invalid_request")
    assert "GGUF" in error["message"]
    assert_error(post(srv, "/api/models/load", {"alias": "junk", "path": str(tmp_path / "absent.gguf")}),
                 400, "invalid_request")
    assert_error(post(srv, "/api/models/load", {"alias": "plain", "mmproj": str(model_files["mmproj"])}),
                 400, "invalid_request")
    assert_error(get(srv, "/api/models/junk"), 404, "not_found")


# ---- pulls ----------------------------------------------------------------------------------


def pull_lines(srv, name: str) -> list[dict]:
    with httpx.stream("POST", srv.url + "/api/models/pull", headers=AUTH, timeout=120,
                      json={"name": name, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_pull_of_an_hf_spec_streams_progress_line_by_line(srv, files):
    lines = pull_lines(srv, f"hf:{REPO}:Q8_0")
    size = len(files["Q8_0"])
    statuses = [line["status"] for line in lines]
    downloading = [line for line in lines if line["status"] == "downloading"]
    assert len(downloading) >= 2, lines  # trickled over 1.5 s, reported every 0.25 s
    assert statuses == ["downloading"] * len(downloading) + ["verifying", "success"], statuses
    for line in downloading:
        assert set(line) == {"status", "progress", "total_bytes", "downloaded_bytes"}
        assert line["total_bytes"] == size and 0 <= line["downloaded_bytes"] <= size
        assert line["progress"] == pytest.approx(line["downloaded_bytes"] / size, abs=1e-4)
    assert [x["downloaded_bytes"] for x in downloading] == sorted(x["downloaded_bytes"] for x in downloading)
    assert downloading[-1]["downloaded_bytes"] == size and downloading[-1]["progress"] == 1.0
    assert lines[-1] == {"status": "success", "model": f"hf.co/{REPO}:Q8_0"}
    # it is a model like any other, ready, with the file's bytes
    assert (srv.store / "models" / f"hf.co__mullama-org__tiny-GGUF--Q8_0" / "model.gguf").read_bytes() == files["Q8_0"]
    assert f"hf.co/{REPO}:Q8_0" in [m["alias"] for m in get(srv, "/api/models").json()["models"]]


def test_pull_without_stream_is_one_object_and_a_file_can_be_named(srv, files):
    r = post(srv, "/api/models/pull", {"name": f"hf:{REPO}:tiny-F16.gguf"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"status": "success", "model": f"hf.co/{REPO}:tiny-F16", "repo": REPO,
                        "size_bytes": len(files["F16"])}
    assert (srv.store / "models" / "hf.co__mullama-org__tiny-GGUF--tiny-F16" / "model.gguf").read_bytes() == files["F16"]


def test_a_pull_that_fails_after_the_stream_began_ends_with_an_error_line_and_leaves_nothing(srv, hub):
    hub.add_hf("mullama-org/junk-GGUF", "junk-Q8_0.gguf", b"this is not a GGUF file " * 1000)
    lines = pull_lines(srv, "hf:mullama-org/junk-GGUF")
    assert lines[0]["status"] == "downloading"
    last = lines[-1]
    assert last["status"] == "error" and last["error"]["type"] == "invalid_request", last
    assert "GGUF" in last["error"]["message"]
    assert not (srv.store / "models" / "hf.co__mullama-org__junk-GGUF").exists()
    assert_error(get(srv, "/api/models/hf.co__mullama-org__junk-GGUF"), 404, "not_found")


def test_pull_errors_are_found_before_the_stream_starts(srv):
    error = assert_error(post(srv, "/api/models/pull", {"name": "no-such-default", "stream": True}), 404, "not_found")
    assert "/api/defaults" in error["message"]
    assert_error(post(srv, "/api/models/pull", {"name": "hf:org/nothing-here", "stream": True}), 404, "not_found")
    error = assert_error(post(srv, "/api/models/pull", {"name": f"hf:{REPO}:missing.gguf"}), 404, "not_found")
    assert "tiny-Q8_0.gguf" in error["message"]  # says what the repo has
    assert_error(post(srv, "/api/models/pull", {"name": "hf:just-a-name"}), 400, "invalid_request")
    assert_error(post(srv, "/api/models/pull", {"stream": True}), 400, "invalid_request")


def test_delete_removes_a_model_from_disk(srv, files):
    assert post(srv, "/api/models/pull", {"name": f"hf:{REPO}:tiny-F16.gguf"}).status_code == 200
    name = f"hf.co/{REPO}:tiny-F16"
    assert post(srv, "/api/models/load", {"alias": name}).status_code == 200
    # the alias is a path segment: its slashes are escaped
    r = httpx.delete(srv.url + "/api/models/hf.co__mullama-org__tiny-GGUF--tiny-F16", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "deleted", "alias": name}, r.text
    assert not (srv.store / "models" / "hf.co__mullama-org__tiny-GGUF--tiny-F16").exists()
    assert name not in [m["alias"] for m in get(srv, "/api/models").json()["models"]]
    assert_error(httpx.delete(srv.url + "/api/models/hf.co__mullama-org__tiny-GGUF--tiny-F16", headers=AUTH),
                 404, "not_found")


# ---- the defaults catalogue -----------------------------------------------------------------


def test_defaults_are_a_catalogue_of_hf_sources_with_capabilities(srv):
    r = get(srv, "/api/defaults")
    assert r.status_code == 200, r.text
    entries = r.json()
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)) >= 5 and DEFAULT in names
    for e in entries:
        assert {"name", "description", "size_hint", "tags", "from", "has_thinking", "has_vision",
                "has_tools"} <= set(e)
        assert e["from"].startswith("hf:") and e["from"].count("/") == 1
        assert all(isinstance(e[k], bool) for k in ("has_thinking", "has_vision", "has_tools"))
    assert any(e["has_vision"] for e in entries) and any(e["has_thinking"] for e in entries)
    assert any(e["kind"] == "embed" for e in entries)


def test_use_a_default_pulls_it_loads_it_and_makes_it_the_default(srv, hub, files):
    assert_error(post(srv, "/api/defaults/no-such-model/use"), 404, "not_found")
    r = post(srv, f"/api/defaults/{DEFAULT}/use")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "loaded" and got["alias"] == DEFAULT and got["is_default"] is True
    assert got["repo"] == DEFAULT_REPO and got["size_bytes"] == len(files["Q8_0"])  # the Q4_K_M file
    # using it again neither fails nor fetches the file again
    fetched = len(hub.gets("qwen2.5-0.5b-instruct-q4_k_m.gguf"))
    assert post(srv, f"/api/defaults/{DEFAULT}/use").status_code == 200
    assert len(hub.gets("qwen2.5-0.5b-instruct-q4_k_m.gguf")) == fetched
    status = get(srv, "/api/system/status").json()
    assert status["default_model"] == DEFAULT
    listed = {m["alias"]: m for m in get(srv, "/api/models").json()["models"]}
    assert listed[DEFAULT]["is_default"] is True and listed[DEFAULT]["loaded"] is True
    assert sum(m["is_default"] for m in listed.values()) == 1
    # a request that names no model uses it
    r = post(srv, "/api/generate", {"prompt": "Hello", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["model"] == DEFAULT, r.text


# ---- the shared routes in Mullama's shape ---------------------------------------------------


def test_generate_takes_mullamas_fields_and_answers_both_shapes(srv):
    r = post(srv, "/api/generate", {"model": "chat", "prompt": "Tell me a story", "max_tokens": 6,
                                    "temperature": 0, "top_p": 0.9, "top_k": 40})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")  # Mullama's default: no stream
    got = r.json()
    assert got["done"] is True and got["model"] == "chat"
    assert got["completion_tokens"] == got["eval_count"] == 6  # max_tokens is num_predict
    assert got["prompt_tokens"] == got["prompt_eval_count"] > 0
    assert got["total_duration_ms"] == got["total_duration"] // 1_000_000
    assert got["tokens_per_second"] > 0
    # the same request in Ollama's words gives the same greedy text
    ollama = post(srv, "/api/generate", {"model": "chat", "prompt": "Tell me a story", "stream": False,
                                         "options": {"num_predict": 6, "temperature": 0}}).json()
    assert ollama["response"] == got["response"]


def test_generate_streams_ndjson_with_the_totals_last(srv):
    with httpx.stream("POST", srv.url + "/api/generate", headers=AUTH, timeout=120,
                      json={"model": "chat", "prompt": "Hello!", "max_tokens": 5, "temperature": 0,
                            "stream": True}) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert all(line["done"] is False and "response" in line for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and last["completion_tokens"] == 5
    assert {"total_duration_ms", "prompt_tokens", "tokens_per_second"} <= set(last)


def test_stop_and_a_top_level_system_prompt(srv):
    base = {"model": "chat", "max_tokens": 8, "temperature": 0}
    plain = post(srv, "/api/generate", {**base, "prompt": "Count"}).json()["response"]
    assert len(plain) > 1
    stop = plain[1:3]
    cut = post(srv, "/api/generate", {**base, "prompt": "Count", "stop": [stop]}).json()
    assert cut["response"] == plain[:plain.index(stop)]
    # chat: `system` at the top level is a system message
    top = post(srv, "/api/chat", {**base, "system": "You are terse.",
                                  "messages": [{"role": "user", "content": "Hi"}]}).json()
    inline = post(srv, "/api/chat", {**base, "messages": [{"role": "system", "content": "You are terse."},
                                                          {"role": "user", "content": "Hi"}]}).json()
    longer = post(srv, "/api/chat", {**base, "system": "You are terse, exact and kind in every answer.",
                                     "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert top["message"] == inline["message"] and top["prompt_tokens"] == inline["prompt_tokens"]
    assert longer["prompt_tokens"] > top["prompt_tokens"]
    assert top["completion_tokens"] == top["eval_count"] and top["total_duration_ms"] >= 0


def test_embeddings_take_input_and_answer_both_shapes(srv):
    r = post(srv, "/api/embeddings", {"model": "embed", "input": ["Hello, world!", "How are you?"]})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["model"] == "embed" and len(got["embeddings"]) == 2
    assert got["dimensions"] == len(got["embeddings"][0]) == len(got["embeddings"][1]) > 0
    assert got["total_tokens"] > 4
    ref = post(srv, "/api/embed", {"model": "embed", "input": ["Hello, world!", "How are you?"]}).json()
    assert np.allclose(got["embeddings"], ref["embeddings"], atol=1e-5)
    one = post(srv, "/api/embeddings", {"model": "embed", "input": "Hello, world!"}).json()
    assert one["embeddings"] == [one["embedding"]]
    assert np.allclose(one["embedding"], ref["embeddings"][0], atol=1e-5)
    # Ollama's older form still answers `embedding`
    old = post(srv, "/api/embeddings", {"model": "embed", "prompt": "Hello, world!"}).json()
    assert np.allclose(old["embedding"], ref["embeddings"][0], atol=1e-5)
    r = post(srv, "/api/embeddings", {"model": "embed"})
    assert r.status_code == 400 and "input" in r.json()["error"]


# ---- system -----------------------------------------------------------------------------------


def test_system_status_status_and_health(srv):
    before = get(srv, "/api/system/status").json()
    post(srv, "/api/generate", {"model": "chat", "prompt": "Hi", "max_tokens": 2, "temperature": 0})
    r = get(srv, "/api/system/status")
    assert r.status_code == 200, r.text
    got = r.json()
    assert {"version", "uptime_secs", "models_loaded", "http_endpoint", "default_model", "stats"} <= set(got)
    assert got["http_endpoint"] == srv.url
    assert got["models_loaded"] == len([m for m in get(srv, "/api/models").json()["models"] if m["loaded"]]) >= 1
    stats = got["stats"]
    assert stats["requests_total"] >= before["stats"]["requests_total"] + 2
    assert stats["tokens_generated"] >= before["stats"]["tokens_generated"] + 2
    assert stats["active_requests"] == 0 and isinstance(stats["gpu_available"], bool)
    assert 0 < stats["memory_used_bytes"] < stats["memory_total_bytes"]
    status = httpx.get(srv.url + "/status").json()  # open, as health checks are
    assert status["status"] == "ok" and status["version"] == got["version"]
    assert status["models_loaded"] == got["models_loaded"] and status["uptime_secs"] >= 0
    health = httpx.get(srv.url + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_health_is_503_while_starting(start_server):
    # a preload that takes a while: the vlm's projector and text model
    server = start_server("--preload", "vlm", "--preload", "chat", "--preload", "plain")
    first = httpx.get(server.url + "/health")
    assert first.status_code == 503 and first.json() == {"status": "starting"}
    server.wait_up("/readyz", 120)
    assert httpx.get(server.url + "/health").status_code == 200
    server.stop()


def test_auth_applies_to_the_api_routes(srv):
    r = httpx.get(srv.url + "/api/models")
    assert_error(r, 401, "invalid_request")
    assert_error(httpx.get(srv.url + "/api/models", headers={"Authorization": "Bearer nope"}), 401,
                 "invalid_request")


def metric(text: str, name: str, **labels) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_metrics_cover_durations_rates_and_each_models_facts(srv):
    assert post(srv, "/api/models/load", {"alias": "chat", "context_size": 256}).status_code in (200, 409)
    for _ in range(2):
        r = post(srv, "/api/generate", {"model": "chat", "prompt": "Hi", "max_tokens": 6, "temperature": 0})
        assert r.status_code == 200, r.text
    text = httpx.get(srv.url + "/metrics").text
    entry = get(srv, "/api/models/chat").json()
    assert metric(text, "modelyard_model_parameters", model="chat") == entry["parameters"]
    assert metric(text, "modelyard_model_context_size", model="chat") == 256
    assert metric(text, "modelyard_model_gpu_layers", model="chat") == 0
    assert metric(text, "modelyard_model_tokens_per_second", model="chat") > 0
    count = metric(text, "modelyard_request_duration_seconds_count", method="POST", route="/api/generate")
    assert count >= 2
    inf = metric(text, "modelyard_request_duration_seconds_bucket", method="POST", route="/api/generate", le="+Inf")
    assert inf == count
    # an unloaded model's facts go with it
    assert post(srv, "/api/models/chat/unload").status_code == 200
    text = httpx.get(srv.url + "/metrics").text
    assert metric(text, "modelyard_model_parameters", model="chat") is None
    assert metric(text, "modelyard_model_tokens_per_second", model="chat") is None
