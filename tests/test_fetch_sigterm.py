"""`modelyard fetch` on SIGTERM, as a deleted or evicted Job's pod gets it: it stops with
exit code 130 and an error line, keeps its partial file, and a re-run resumes it."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from support.hubs import FileHub
from support.modelfiles import make_gguf

MB = 1024 * 1024


@pytest.fixture
def hub():
    with FileHub() as h:
        yield h


def test_sigterm_keeps_the_partial_and_a_rerun_resumes(hub, tmp_path):
    data = make_gguf(tmp_path / "m.gguf", 3 * MB, seed=5).read_bytes()
    url = hub.add("slow.gguf", data, rate=1 * MB)
    store = tmp_path / "store"
    args = [sys.executable, "-m", "modelyard.server.cli", "fetch", url, "--store", str(store),
            "--id", "m", "--kind", "llm", "--sha256", hashlib.sha256(data).hexdigest()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1].get("size", 0) >= MB // 2:
            break
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10  # it stops promptly, within the pod's grace period
    assert proc.returncode == 130, stderr
    last = json.loads(rest.splitlines()[-1])
    assert last["error"]["code"] == 499 and "resume" in last["error"]["message"]

    folder = store / "models" / "m"
    partial = folder / "model.gguf.partial"
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert data.startswith(partial.read_bytes())  # what was kept is the file's true prefix
    assert not (folder / "model.gguf").exists()
    assert json.loads((folder / "model.json").read_text())["files"] == {}

    hub.files["files/slow.gguf"].rate = None
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [json.loads(x) for x in done.stdout.splitlines()]
    assert events[0]["size"] == kept  # it went on from the kept bytes
    assert hub.gets("slow.gguf")[-1].headers["range"] == f"bytes={events[0]['size']}-"
    model = events[-1]["model"]
    assert model["readyToUse"] is True and model["sha256"] == hashlib.sha256(data).hexdigest()
    assert (folder / "model.gguf").read_bytes() == data and not partial.exists()
