"""Every way a file enters the store records the file's true sha256, and an expected
sha256 refuses a mismatch and accepts a match.

The ways: an upload, a plain URL, a Hugging Face file, and a download resumed after
kill -9; through the mModelStore API (a real gunicorn) and through `modelyard fetch`
(a real process). The mModelStore API takes no expected hash, so refusal is checked
on `modelyard fetch --sha256`, which the operator's download Job passes from the Model.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from support.hubs import COMMIT, FileHub
from support.modelfiles import make_gguf

AUTH = {"Authorization": "Bearer 1234"}
MB = 1024 * 1024
SOURCES = ["url", "hf", "resumed"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub():
    with FileHub() as h:
        yield h


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_gguf(tmp_path_factory.mktemp("hashes") / "m.gguf", 2 * MB, seed=7).read_bytes()


def stored(store, model_id="m") -> bytes:
    return (store / "models" / model_id / "model.gguf").read_bytes()


def recorded(store, model_id="m") -> dict:
    return json.loads((store / "models" / model_id / "model.json").read_text())["files"]


# ---- through the mModelStore API --------------------------------------------------------


def api_download(server, model_id, url) -> list[dict]:
    with httpx.stream("POST", f"{server.url}/store/v1/models/{model_id}/download",
                      json={"url": url}, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def create(server, model_id):
    httpx.post(f"{server.url}/store/v1/models", json={"id": model_id, "version": "1", "kind": "llm"},
               headers=AUTH).raise_for_status()


def check_api_model(server, model_id, data, reported: dict) -> None:
    """The hash the API reports, the one on record and the served file's all equal the truth."""
    truth = sha(data)
    assert reported["readyToUse"] is True and reported["sha256"] == truth
    assert httpx.get(f"{server.url}/store/v1/models/{model_id}").json()["sha256"] == truth
    assert recorded(server.store, model_id)["model"]["sha256"] == truth
    assert sha(httpx.get(f"{server.url}/store/v1/models/{model_id}?alt=media").content) == truth


@pytest.fixture
def dl_server(server_factory, hub, tmp_path):
    return server_factory(api_key="1234", env={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")})


def test_api_upload_records_the_true_hash(dl_server, data):
    create(dl_server, "m")
    r = httpx.post(f"{dl_server.url}/store/v1/models/m/upload", files={"file": data}, headers=AUTH)
    check_api_model(dl_server, "m", data, r.json())


@pytest.mark.parametrize("source", ["url", "url-dropped", "hf"])
def test_api_download_records_the_true_hash(dl_server, hub, data, source):
    if source == "hf":
        hub.add_hf("org/repo", "m.gguf", data)
        url = f"{hub.url}/org/repo/resolve/main/m.gguf"
    else:
        # A dropped connection is resumed with Range inside the same download.
        url = hub.add("m.gguf", data, drop_after=MB + 17 if source == "url-dropped" else None)
    create(dl_server, "m")
    events = api_download(dl_server, "m", url)
    check_api_model(dl_server, "m", data, events[-1]["model"])
    if source == "url-dropped":
        assert hub.gets("m.gguf")[-1].headers["range"] == f"bytes={MB + 17}-"


def test_api_download_after_kill_9_records_the_true_hash(dl_server, hub, data):
    """The server dies mid-download; after the restart the same download completes."""
    url = hub.add("slow.gguf", data, rate=1 * MB)
    create(dl_server, "m")
    with httpx.stream("POST", f"{dl_server.url}/store/v1/models/m/download", json={"url": url},
                      headers=AUTH, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:]).get("size", 0) >= MB // 2:
                break
        dl_server.kill()
    dl_server.start()
    hub.files["files/slow.gguf"].rate = None
    events = api_download(dl_server, "m", url)
    check_api_model(dl_server, "m", data, events[-1]["model"])


# ---- through `modelyard fetch` ----------------------------------------------------------


def fetch_command(*args) -> list[str]:
    return [sys.executable, "-m", "modelyard.server.cli", "fetch", *args]


def prepare(source, hub, data, tmp_path) -> tuple[str, dict]:
    """The source URL; for "resumed", a partial left by a `modelyard fetch` killed with -9."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONUNBUFFERED": "1"}
    if source == "hf":
        hub.add_hf("org/repo", "m.gguf", data)
        return f"hf://org/repo/m.gguf", env
    url = hub.add("m.gguf", data, rate=1 * MB if source == "resumed" else None)
    if source == "resumed":
        args = (url, "--store", str(tmp_path / "store"), "--id", "m", "--kind", "llm")
        proc = subprocess.Popen(fetch_command(*args), env=env, stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if json.loads(line).get("size", 0) >= MB // 2:
                    break
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
            proc.stdout.close()
        kept = (tmp_path / "store" / "models" / "m" / "model.gguf.partial").stat().st_size
        assert 0 < kept < len(data)
        hub.files["files/m.gguf"].rate = None
    return url, env


def run_fetch(env, url, store, *extra) -> tuple[int, list[dict], str]:
    done = subprocess.run(fetch_command(url, "--store", str(store), "--id", "m", "--kind", "llm",
                                        *extra), env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, [json.loads(x) for x in done.stdout.splitlines()], done.stderr


@pytest.mark.parametrize("source", SOURCES)
def test_fetch_records_the_true_hash_and_accepts_it(hub, data, tmp_path, source):
    url, env = prepare(source, hub, data, tmp_path)
    store = tmp_path / "store"
    code, lines, stderr = run_fetch(env, url, store, "--sha256", sha(data))
    assert code == 0, stderr
    model = lines[-1]["model"]
    assert model["readyToUse"] is True and model["sha256"] == sha(data)
    assert recorded(store)["model"]["sha256"] == sha(data) == sha(stored(store))
    if source == "resumed":
        assert hub.gets("m.gguf")[-1].headers["range"].startswith("bytes=")  # it did resume


@pytest.mark.parametrize("source", SOURCES)
def test_fetch_refuses_a_wrong_hash(hub, data, tmp_path, source):
    url, env = prepare(source, hub, data, tmp_path)
    store = tmp_path / "store"
    wrong = sha(data + b"x")
    code, lines, stderr = run_fetch(env, url, store, "--sha256", wrong)
    assert code == 1
    message = lines[-1]["error"]["message"]
    assert wrong in message and sha(data) in message  # expected and actual, both named
    assert recorded(store) == {}
    folder = store / "models" / "m"
    assert not (folder / "model.gguf").exists() and not list(folder.glob("*.partial"))
