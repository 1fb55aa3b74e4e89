"""Ollama's pull, push, create and blobs through the official `ollama` client, unchanged,
against a real gunicorn: pulls from the Hugging Face stand-in (huggingface_hub's real
code) and from a real OCI registry on loopback (Debian's docker-registry), pushes to it,
and creates models from other models, from blobs and by llama.cpp's quantizer."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import httpx
import ollama
import pytest

import modelgen
from conftest import AUTH
from support.hubs import FileHub
from support.registries import BINARY, Registry

REPO = "org/tiny-GGUF"
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("pull")
    return {
        "Q8_0": modelgen.make_llama_gguf(d / "tiny-Q8_0.gguf", vocab="qwen2", qtype="Q8_0", seed=3).read_bytes(),
        "Q4_K_M": modelgen.make_quantized_llama_gguf(d / "tiny-Q4_K_M.gguf", "Q4_K_M", seed=3).read_bytes(),
    }


@pytest.fixture(scope="module")
def hub(files):
    with FileHub() as hub:
        hub.add_hf(REPO, "tiny-Q8_0.gguf", files["Q8_0"])
        hub.add_hf(REPO, "tiny-Q4_K_M.gguf", files["Q4_K_M"])
        hub.add_hf(REPO, "README.md", b"# tiny\n")
        yield hub


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which(BINARY) is None:
        pytest.skip("docker-registry is not installed (tools/image_tools.sh installs it)")
    with Registry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


@pytest.fixture(scope="module")
def srv(start_server, hub):
    """A server of its own: huggingface_hub in it reads HF_ENDPOINT at start."""
    return start_server("--parallel", "2", env={"HF_ENDPOINT": hub.url})


@pytest.fixture(scope="module")
def oc(srv):
    return ollama.Client(host=srv.url, headers=AUTH, timeout=120)


@pytest.fixture(scope="module")
def openai_client(srv):
    import openai
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=AUTH["Authorization"].split()[1], max_retries=0)


def store_record(srv, name: str) -> dict:
    from modelyard.server.shared import names
    r = httpx.get(f"{srv.url}/store/v1/models/{names.to_id(name)}", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def model_path(srv, name: str, file: str = "model.gguf"):
    from modelyard.server.shared import names
    return srv.store / "models" / names.to_id(name) / file


def shown_raw(srv, name: str) -> dict:
    """/api/show's JSON as sent (the client's ShowResponse has no `system`)."""
    r = httpx.post(srv.url + "/api/show", headers=AUTH, json={"model": name})
    assert r.status_code == 200, r.text
    return r.json()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- pull from Hugging Face -------------------------------------------------------------

def test_pull_from_the_hub_streams_progress_and_serves_the_quant(oc, srv, files, openai_client):
    name = f"hf.co/{REPO}:Q8_0"
    events = list(oc.pull(name, stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    downloading = [e for e in events if e.status == "downloading"]
    assert downloading and downloading[-1].completed == downloading[-1].total == len(files["Q8_0"])
    assert [e.completed for e in downloading] == sorted(e.completed for e in downloading)
    assert "verifying sha256 digest" in statuses
    # listed under its name, stored under a valid id with the file's true hash
    listed = {m.model: m for m in oc.list().models}
    assert name in listed and listed[name].details.quantization_level == "Q8_0"
    record = store_record(srv, name)
    assert record["readyToUse"] and record["sha256"] == sha(files["Q8_0"])
    assert model_path(srv, name).read_bytes() == files["Q8_0"]
    # it answers by that name on Ollama's chat and on the OpenAI route
    got = oc.chat(model=name, messages=[{"role": "user", "content": "hi"}], options=GREEDY)
    ref = openai_client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}],
                                         temperature=0, max_tokens=8, extra_body={"repeat_penalty": 1.1})
    assert got.message.content == ref.choices[0].message.content and got.eval_count > 0


def test_pull_without_a_quant_picks_q4_k_m(oc, srv, files):
    done = oc.pull(f"hf.co/{REPO}")
    assert done.status == "success"
    assert model_path(srv, f"hf.co/{REPO}").read_bytes() == files["Q4_K_M"]
    assert oc.show(f"hf.co/{REPO}:latest").details.quantization_level == "Q4_K_M"


def test_pull_of_a_missing_quant_or_repo_is_a_404_that_says_what_exists(oc):
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull(f"hf.co/{REPO}:Q6_K")
    assert e.value.status_code == 404
    assert "Q6_K" in e.value.error and "tiny-Q8_0.gguf" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull("hf.co/org/nothing-here")
    assert e.value.status_code == 404


def test_a_dropped_connection_resumes(oc, srv, hub, model_files):
    # huggingface_hub resumes from the last whole chunk it read (fetch.HF_CHUNK, 1 MiB)
    data = model_files["chat"].read_bytes()
    assert len(data) > 16 * 2**20
    hub.add_hf("org/drop-GGUF", "drop-F16.gguf", data, drop_after=15 * 2**20 + 12345)
    assert oc.pull("hf.co/org/drop-GGUF:F16").status == "success"
    assert model_path(srv, "hf.co/org/drop-GGUF:F16").read_bytes() == data
    ranges = [r.headers.get("range") for r in hub.gets("drop-F16.gguf")]
    assert ranges[0] is None and ranges[1] == f"bytes={15 * 2**20}-", ranges


def test_disconnecting_cancels_the_pull_and_leaves_nothing(srv, hub, files):
    hub.add_hf("org/slow-GGUF", "slow-Q8_0.gguf", files["Q8_0"], rate=len(files["Q8_0"]) / 30)
    with httpx.stream("POST", srv.url + "/api/pull", headers=AUTH, timeout=30,
                      json={"model": "hf.co/org/slow-GGUF:Q8_0"}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        seen = [json.loads(next(lines)) for _ in range(3)]
    assert any(e.get("status") == "downloading" for e in seen)
    folder = model_path(srv, "hf.co/org/slow-GGUF:Q8_0").parent
    deadline = time.monotonic() + 30
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists(), f"the cancelled pull left {sorted(os.listdir(folder))}"
    r = httpx.get(srv.url + "/api/tags", headers=AUTH)
    assert "hf.co/org/slow-GGUF:Q8_0" not in [m["name"] for m in r.json()["models"]]


def test_pull_bodies_are_checked(srv):
    r = httpx.post(srv.url + "/api/pull", headers=AUTH, json={"stream": False})
    assert r.status_code == 400 and "model" in r.json()["error"]
    r = httpx.post(srv.url + "/api/pull", headers=AUTH, content=b"{nope")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)


# ---- blobs and create --------------------------------------------------------------------

def test_blobs_are_verified(srv, oc, model_files):
    data = model_files["chat"].read_bytes()
    digest = "sha256:" + sha(data)
    assert httpx.head(f"{srv.url}/api/blobs/{digest}", headers=AUTH).status_code == 404
    wrong = "sha256:" + sha(b"something else")
    r = httpx.post(f"{srv.url}/api/blobs/{wrong}", headers=AUTH, content=data)
    assert r.status_code == 400 and "sha256" in r.json()["error"]
    assert httpx.head(f"{srv.url}/api/blobs/{wrong}", headers=AUTH).status_code == 404
    r = httpx.post(f"{srv.url}/api/blobs/sha256:123", headers=AUTH, content=data)
    assert r.status_code == 400
    assert oc.create_blob(model_files["chat"]) == digest
    assert httpx.head(f"{srv.url}/api/blobs/{digest}", headers=AUTH).status_code == 200
    assert not list((srv.store / "blobs").glob(".upload-*"))


def test_create_from_a_blob(oc, srv, model_files):
    digest = oc.create_blob(model_files["chat"])
    events = list(oc.create(model="from-blob", files={"chat.gguf": digest}, stream=True))
    assert events[-1].status == "success"
    assert model_path(srv, "from-blob").read_bytes() == model_files["chat"].read_bytes()
    got = oc.generate(model="from-blob", prompt="hi", options=GREEDY)
    assert got.done and got.eval_count > 0
    with pytest.raises(ollama.ResponseError) as e:
        oc.create(model="no-blob", files={"x.gguf": "sha256:" + "0" * 64})
    assert e.value.status_code == 400 and "upload it first" in e.value.error


def test_create_from_a_model_shares_the_file_and_applies_system_and_parameters(oc, srv):
    oc.create(model="terse", from_="chat", system="You answer in one word.",
              parameters={"num_predict": 3, "temperature": 0, "stop": ["\n\n"]})
    assert os.stat(model_path(srv, "terse")).st_ino == os.stat(model_path(srv, "chat")).st_ino
    shown = oc.show("terse")
    assert shown_raw(srv, "terse")["system"] == "You answer in one word."
    assert "num_predict 3" in shown.parameters and 'stop "\\n\\n"' in shown.parameters
    assert 'SYSTEM """You answer in one word."""' in shown.modelfile
    # the parameters are the model's defaults; the request's own options win
    assert oc.generate(model="terse", prompt="hi").eval_count <= 3
    assert oc.generate(model="terse", prompt="hi", options={"num_predict": 6, "temperature": 0}).eval_count > 3
    # the system prompt is the one the answer was made with: equal to sending it explicitly
    msgs = [{"role": "user", "content": "Name a colour."}]
    implicit = oc.chat(model="terse", messages=msgs, options={"num_predict": 6, "temperature": 0})
    explicit = oc.chat(model="chat", messages=[{"role": "system", "content": "You answer in one word."}] + msgs,
                       options={"num_predict": 6, "temperature": 0})
    bare = oc.chat(model="chat", messages=msgs, options={"num_predict": 6, "temperature": 0})
    assert implicit.prompt_eval_count == explicit.prompt_eval_count > bare.prompt_eval_count
    assert implicit.message.content == explicit.message.content
    # deleting the derived model keeps the base whole
    oc.delete("terse")
    assert oc.chat(model="chat", messages=msgs, options=GREEDY).done


def test_create_with_quantize_runs_llamas_quantizer_with_progress(oc, srv, model_files):
    events = list(oc.create(model="chat-q8", from_="chat", quantize="q8_0", stream=True))
    quantizing = [e for e in events if e.status and e.status.startswith("quantizing")]
    assert quantizing and quantizing[0].status == "quantizing F16 model to Q8_0"
    assert quantizing[-1].completed == quantizing[-1].total > 0
    assert events[-1].status == "success"
    assert oc.show("chat-q8").details.quantization_level == "Q8_0"
    assert model_path(srv, "chat-q8").stat().st_size < model_path(srv, "chat").stat().st_size
    assert oc.generate(model="chat-q8", prompt="hi", options=GREEDY).eval_count > 0
    with pytest.raises(ollama.ResponseError) as e:
        oc.create(model="chat-bad", from_="chat", quantize="q9_9")
    assert "q9_9" in e.value.error
    assert "chat-bad:latest" not in [m.model for m in oc.list().models]


def test_the_toolkits_modelfile_form(srv, oc):
    r = httpx.post(srv.url + "/api/create", headers=AUTH, json={
        "name": "mf", "stream": False,
        "modelfile": 'FROM chat\nPARAMETER temperature 0\nSYSTEM """Be brief."""\n'})
    assert r.status_code == 200 and r.json()["status"] == "success"
    assert shown_raw(srv, "mf")["system"] == "Be brief."
    r = httpx.post(srv.url + "/api/create", headers=AUTH,
                   json={"name": "mf2", "modelfile": "PARAMETER temperature 0\n"})
    assert r.status_code == 400 and "FROM" in r.json()["error"]
    r = httpx.post(srv.url + "/api/create", headers=AUTH, json={"name": "mf3", "from": "nope"})
    assert r.status_code == 404


# ---- push to and pull from an OCI registry -------------------------------------------------

def test_push_then_pull_back_byte_identical(oc, srv, registry):
    name = f"{registry.host}/library/tiny:1"
    oc.create(model=name, from_="chat", system="Registry system prompt.", parameters={"temperature": 0})
    original = model_path(srv, name).read_bytes()
    events = list(oc.push(name, insecure=True, stream=True))
    assert events[-1].status == "success"
    pushing = [e for e in events if e.status == "pushing"]
    assert pushing and pushing[-1].completed == pushing[-1].total
    manifest = registry.manifest("library/tiny", "1")
    types = [l["mediaType"] for l in manifest["layers"]]
    assert "application/vnd.ollama.image.model" in types and "application/vnd.ollama.image.system" in types
    model_layer = next(l for l in manifest["layers"] if l["mediaType"].endswith(".model"))
    assert model_layer["digest"] == "sha256:" + sha(original)

    oc.delete(name)
    assert name not in [m.model for m in oc.list().models]
    events = list(oc.pull(name, insecure=True, stream=True))
    assert events[-1].status == "success"
    assert any(e.status == "downloading" and e.digest == model_layer["digest"] for e in events)
    assert model_path(srv, name).read_bytes() == original
    assert shown_raw(srv, name)["system"] == "Registry system prompt."
    assert oc.generate(model=name, prompt="hi", options=GREEDY).done


def test_registry_errors_are_clear(oc, registry):
    with pytest.raises(ollama.ResponseError) as e:
        oc.pull(f"{registry.host}/library/absent:1", insecure=True)
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        oc.push(f"{registry.host}/library/never-made:1", insecure=True)
    assert e.value.status_code == 404


def test_the_toolkits_pull_and_push_forms(srv, registry, files):
    """The Ollama Toolkit document's shapes from a plain HTTP client: `name`, NDJSON lines
    with status, digest, total and completed, and {"status": "success"} at the end."""
    r = httpx.post(srv.url + "/api/pull", headers=AUTH, timeout=120,
                   json={"name": f"hf.co/{REPO}:Q8_0", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert all(isinstance(line["status"], str) for line in lines)
    progress = [line for line in lines if line["status"] == "downloading"]
    assert progress and all({"digest", "total", "completed"} <= line.keys() for line in progress)
    assert lines[-1]["status"] == "success"
    r = httpx.post(srv.url + "/api/pull", headers=AUTH, timeout=120,
                   json={"name": f"hf.co/{REPO}:Q8_0", "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    name = f"{registry.host}/toolkit/tiny:2"
    assert httpx.post(srv.url + "/api/copy", headers=AUTH,
                      json={"source": f"hf.co/{REPO}:Q8_0", "destination": name}).status_code == 200
    r = httpx.post(srv.url + "/api/push", headers=AUTH, timeout=120,
                   json={"name": name, "insecure": True, "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    layer = next(l for l in registry.manifest("toolkit/tiny", "2")["layers"] if l["mediaType"].endswith(".model"))
    assert layer["digest"] == "sha256:" + sha(files["Q8_0"])
