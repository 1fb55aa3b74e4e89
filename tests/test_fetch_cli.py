"""`modelyard fetch` as the operator's Job runs it: a real process, a local file server."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from support.hubs import COMMIT, FileHub
from support.modelfiles import make_gguf

MB = 1024 * 1024


@pytest.fixture
def hub():
    with FileHub() as h:
        yield h


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return (make_gguf(folder / "m.gguf", 4 * MB).read_bytes(),
            make_gguf(folder / "p.gguf", 512 * 1024, seed=1).read_bytes())


@pytest.fixture
def env(hub, tmp_path):
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"),
            "PYTHONUNBUFFERED": "1"}


def command(*args) -> list[str]:
    return [sys.executable, "-m", "modelyard.server.cli", "fetch", *args]


def fetch(env, *args) -> tuple[int, list[dict], str]:
    """Run to the end; (exit code, the JSON lines, stderr)."""
    done = subprocess.run(command(*args), env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_prints_json_lines_and_makes_the_model_ready(hub, env, tmp_path, gguf_bytes):
    data = gguf_bytes[0]
    url = hub.add("m.gguf", data, rate=8 * MB)
    store = tmp_path / "store"
    code, lines, stderr = fetch(env, url, "--store", str(store), "--id", "m", "--kind", "llm",
                                "--sha256", sha(data).upper(), "--version", "2.1.0")
    assert code == 0, stderr
    progress, done = lines[:-1], lines[-1]
    assert progress and all(e["totalSize"] == len(data) for e in progress)
    sizes = [e["size"] for e in progress]
    assert sizes == sorted(sizes) and sizes[-1] == len(data)
    assert done["done"] is True
    assert done["model"]["readyToUse"] is True
    assert done["model"]["version"] == "2.1.0"
    assert done["model"]["sha256"] == sha(data)
    assert sha((store / "models" / "m" / "model.gguf").read_bytes()) == sha(data)
    assert not list((store / "models" / "m").glob("*.partial"))

    # Already there: done at once, without touching the network.
    gets = len(hub.gets("m.gguf"))
    code, lines, _ = fetch(env, url, "--store", str(store), "--id", "m", "--sha256", sha(data))
    assert code == 0
    assert lines == [done]
    assert len(hub.gets("m.gguf")) == gets


def test_a_new_source_downloads_again(hub, env, tmp_path, gguf_bytes):
    """The operator re-runs fetch when a Model's source changes: it must not be a no-op."""
    old_url = hub.add("old.gguf", gguf_bytes[0])
    new_url = hub.add("new.gguf", gguf_bytes[1])
    store = tmp_path / "store"
    assert fetch(env, old_url, "--store", str(store), "--id", "m", "--kind", "llm")[0] == 0
    code, lines, stderr = fetch(env, new_url, "--store", str(store), "--id", "m")
    assert code == 0, stderr
    assert len(hub.gets("new.gguf")) >= 1
    assert lines[-1]["model"]["sha256"] == sha(gguf_bytes[1])
    assert sha((store / "models" / "m" / "model.gguf").read_bytes()) == sha(gguf_bytes[1])


def test_sha256_mismatch_fails_and_leaves_nothing(hub, env, tmp_path, gguf_bytes):
    url = hub.add("m.gguf", gguf_bytes[0])
    store = tmp_path / "store"
    code, lines, stderr = fetch(env, url, "--store", str(store), "--id", "m", "--kind", "llm",
                                "--sha256", "0" * 64)
    assert code != 0
    assert lines[-1]["error"]["code"] == 400
    assert "sha256 mismatch" in lines[-1]["error"]["message"]
    assert "sha256 mismatch" in stderr
    folder = store / "models" / "m"
    assert json.loads((folder / "model.json").read_text())["files"] == {}
    assert not list(folder.glob("*.partial")) and not (folder / "model.gguf").exists()


def test_upstream_404_fails_with_the_url(hub, env, tmp_path):
    url = hub.url + "/files/absent.gguf"
    code, lines, stderr = fetch(env, url, "--store", str(tmp_path / "s"), "--id", "m",
                                "--kind", "llm")
    assert code != 0
    assert lines[-1]["error"]["code"] == 404
    assert url in stderr


def test_resume_after_kill_9(hub, env, tmp_path, gguf_bytes):
    data = gguf_bytes[0]
    url = hub.add("slow.gguf", data, rate=1 * MB)
    store = tmp_path / "store"
    args = (url, "--store", str(store), "--id", "m", "--kind", "llm")
    proc = subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line).get("size", 0) >= 1 * MB:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stdout.close()
    partial = store / "models" / "m" / "model.gguf.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(data)

    hub.files["files/slow.gguf"].rate = None
    code, lines, stderr = fetch(env, *args)
    assert code == 0, stderr
    assert lines[-1]["model"]["readyToUse"] is True
    assert lines[0] == {"size": kept, "totalSize": len(data)}  # it starts where it stopped
    assert hub.gets("slow.gguf")[-1].headers["range"] == f"bytes={kept}-"
    assert sha((store / "models" / "m" / "model.gguf").read_bytes()) == sha(data)
    assert not partial.exists()


def test_vlm_from_hugging_face_at_a_revision(hub, env, tmp_path, gguf_bytes):
    main, proj = gguf_bytes
    hub.add_hf("org/vlm-GGUF", "model.gguf", main)
    hub.add_hf("org/vlm-GGUF", "mmproj-f16.gguf", proj)
    code, lines, stderr = fetch(env, "hf://org/vlm-GGUF/model.gguf", "--mmproj",
                                "hf://org/vlm-GGUF/mmproj-f16.gguf", "--revision", COMMIT,
                                "--store", str(tmp_path / "s"), "--id", "v", "--kind", "vlm")
    assert code == 0, stderr
    assert lines[-1]["model"]["readyToUse"] is True
    assert lines[-1]["model"]["totalSize"] == len(main) + len(proj)
    assert {"mmproj": {"size": len(proj), "totalSize": len(proj)}} in lines
    assert {"size": len(main), "totalSize": len(main)} in lines
    paths = {r.path for r in hub.log if r.method == "GET"}
    assert f"/org/vlm-GGUF/resolve/{COMMIT}/mmproj-f16.gguf" in paths


@pytest.mark.parametrize("args, message", [
    (("--id", "new"), "--kind"),
    (("--id", "m", "--kind", "onnx"), "kind 'llm'"),
    (("--id", "m", "--mmproj", "hf://a/b/p.gguf"), "vlm"),
])
def test_refusals(hub, env, tmp_path, args, message):
    store = tmp_path / "store"
    url = hub.add("x.gguf", b"GGUF")
    (store / "models" / "m").mkdir(parents=True)
    (store / "models" / "m" / "model.json").write_text(
        json.dumps({"id": "m", "kind": "llm", "version": "1", "createdAt": 1, "files": {}}))
    code, lines, stderr = fetch(env, url, "--store", str(store), *args)
    assert code == 1
    assert lines[-1]["error"]["code"] == 400
    assert message in lines[-1]["error"]["message"] and message in stderr
    assert not hub.gets("x.gguf")


def test_bad_flags_are_usage_errors(env, tmp_path):
    code, _, stderr = fetch(env, "ftp://example.com/x", "--store", str(tmp_path), "--id", "m",
                            "--kind", "llm")
    assert code == 1 and "SOURCE" in stderr
    code, _, stderr = fetch(env, "hf://a/b/c.gguf", "--store", str(tmp_path), "--id", "m",
                            "--sha256", "xyz")
    assert code == 2 and "--sha256" in stderr
