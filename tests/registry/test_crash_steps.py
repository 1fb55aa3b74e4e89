"""kill -9 at every step of a commit: a restart shows the old complete model or the new one.

MODELYARD_TEST_CRASH_AT=<step> makes the process that commits stop with os._exit at that
step (no clean-up, no flush: what SIGKILL does). The upload runs in a real gunicorn worker
and the download in a real `modelyard fetch`; then the store is opened again the way each
is in production (the server's start-up recovery, the Job's re-run).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest

from support.hubs import FileHub
from support.modelfiles import make_gguf

AUTH = {"Authorization": "Bearer 1234"}
MB = 1024 * 1024
# Where each step leaves things before the restart, and which model the restart must show.
# "old": the previous complete file; "new": the file of the interrupted commit.
STEPS = {
    "partial-synced": "old",
    "record-write": "old",
    "old-record-dropped": "new",
    "renamed": "new",
    "metadata-write": "new",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    old = make_gguf(folder / "old.gguf", 300_000, seed=1).read_bytes()
    new = make_gguf(folder / "new.gguf", 700_000, seed=2).read_bytes()
    return old, new


def meta(folder) -> dict:
    return json.loads((folder / "model.json").read_text())


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith(".partial") or p.name.endswith(".tmp"))


def check_crashed_at(step: str, folder, old: bytes, new: bytes) -> None:
    """The state on disk proves the process stopped at `step`, not before or after it."""
    m = meta(folder)
    partial = folder / "model.gguf.partial"
    final = (folder / "model.gguf").read_bytes()
    if step in ("partial-synced", "record-write"):
        assert m["files"]["model"]["sha256"] == sha(old) and "pending" not in m
        assert final == old and partial.read_bytes() == new
        tmp = [n for n in leftovers(folder) if n.endswith(".tmp")]
        assert bool(tmp) == (step == "record-write")
    else:
        assert "model" not in m["files"] and m["pending"]["model"]["sha256"] == sha(new)
        if step == "old-record-dropped":
            assert final == old and partial.read_bytes() == new
        else:
            assert final == new and not partial.exists()
            tmp = [n for n in leftovers(folder) if n.endswith(".tmp")]
            assert bool(tmp) == (step == "metadata-write")


def check_whole(model: dict, body: bytes, expected: bytes) -> None:
    """Ready, and the file served is the whole expected file with its own hash recorded."""
    assert model["readyToUse"] is True
    assert body == expected
    assert model["sha256"] == sha(body) and model["totalSize"] == len(body)


@pytest.mark.parametrize("step", STEPS)
def test_server_killed_at_each_commit_step(server_factory, tmp_path, files, step):
    old, new = files
    store = tmp_path / "store"
    server = server_factory(store_dir=store, api_key="1234")
    httpx.post(f"{server.url}/store/v1/models", json={"id": "m", "version": "1", "kind": "llm"},
               headers=AUTH).raise_for_status()
    r = httpx.post(f"{server.url}/store/v1/models/m/upload", files={"file": old}, headers=AUTH)
    assert r.json()["readyToUse"] is True
    server.stop()

    crashing = server_factory(store_dir=store, api_key="1234",
                              env={"MODELYARD_TEST_CRASH_AT": step})
    with pytest.raises(httpx.TransportError):  # the worker died mid-request
        httpx.post(f"{crashing.url}/store/v1/models/m/upload", files={"file": new},
                   headers=AUTH, timeout=30)
    crashing.kill()
    folder = store / "models" / "m"
    check_crashed_at(step, folder, old, new)

    server.start()  # without the hook
    assert leftovers(folder) == []
    model = httpx.get(f"{server.url}/store/v1/models/m").json()
    body = httpx.get(f"{server.url}/store/v1/models/m?alt=media").content
    check_whole(model, body, old if STEPS[step] == "old" else new)


@pytest.mark.parametrize("step", STEPS)
def test_fetch_killed_at_each_commit_step_then_rerun(tmp_path, files, step):
    """The download Job's case: the pod dies, the Job runs `modelyard fetch` again."""
    old, new = files
    store = tmp_path / "store"
    with FileHub() as hub:
        old_url, new_url = hub.add("old.gguf", old), hub.add("new.gguf", new)
        env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home")}

        def fetch(url, crash_at=None):
            run_env = {**env, "MODELYARD_TEST_CRASH_AT": crash_at} if crash_at else env
            return subprocess.run(
                [sys.executable, "-m", "modelyard.server.cli", "fetch", url, "--store", str(store),
                 "--id", "m", "--kind", "llm"], env=run_env, capture_output=True, text=True,
                timeout=120)

        assert fetch(old_url).returncode == 0
        crashed = fetch(new_url, crash_at=step)
        assert crashed.returncode == 137 and crashed.stdout.count('"done"') == 0, crashed.stderr
        folder = store / "models" / "m"
        check_crashed_at(step, folder, old, new)
        gets_before = len(hub.gets("new.gguf"))

        rerun = fetch(new_url)
        assert rerun.returncode == 0, rerun.stderr
        done = json.loads(rerun.stdout.splitlines()[-1])
        check_whole(done["model"], (folder / "model.gguf").read_bytes(), new)
        assert leftovers(folder) == []
        # A commit that was decided is finished, not downloaded again.
        if STEPS[step] == "new":
            assert len(hub.gets("new.gguf")) == gets_before
