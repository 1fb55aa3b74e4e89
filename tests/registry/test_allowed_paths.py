"""The allowed folders of path-taking routes (registry/allowed.py), and the scan's bounds:
pure checks and real files, no server (the routes' tests are in tests/inference)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelyard.server.registry import allowed, registered
from modelyard.server.registry.errors import InvalidFile


def _settings(paths, store="/srv/store"):
    return SimpleNamespace(allowed_paths=paths, store=Path(store))


def test_the_defaults_are_the_store_and_the_users_model_folders_and_none_in_a_pod():
    home = Path(os.path.realpath(os.path.expanduser("~")))
    roots = allowed.for_settings(_settings(None), environ={}).roots
    assert Path("/srv/store") in roots
    assert {home / "models", home / ".cache/huggingface", home / ".ollama/models",
            home / ".lmstudio/models"} <= set(roots)
    assert allowed.for_settings(_settings(None), environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).roots == ()
    assert allowed.for_settings(_settings(["none"]), environ={}).roots == ()
    assert allowed.for_settings(_settings(["/data"]), environ={}).roots == (Path("/data"),)


def test_a_path_is_checked_once_its_links_are_resolved(tmp_path):
    inside = tmp_path / "models"
    inside.mkdir()
    (inside / "a.gguf").write_bytes(b"GGUF")
    (inside / "out.gguf").symlink_to("/etc/hostname")
    (inside / "up").symlink_to(tmp_path)
    folders = allowed.AllowedFolders.of([inside])
    assert folders.check(inside / "a.gguf") == inside / "a.gguf"
    assert folders.check(str(inside) + "/sub/../a.gguf") == inside / "a.gguf"
    for path in (inside / "out.gguf", inside / "up" / "x.gguf", str(inside) + "/../x", "/etc",
                 str(inside) + "\0.gguf", tmp_path / "models-sibling"):
        with pytest.raises(allowed.PathNotAllowed):
            folders.check(path)
    with pytest.raises(InvalidFile, match="must be absolute"):
        folders.check("models/a.gguf")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_refusal(fifo)), daemon=True)
    worker.start()
    worker.join(5)
    assert result == ["not a regular file"]


def _refusal(path) -> str:
    try:
        allowed.open_regular(path)
    except InvalidFile as exc:
        return "not a regular file" if "not a regular file" in str(exc) else str(exc)
    return "opened"


def test_a_scan_stops_at_its_entry_bound(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}.txt").write_text("x")
    result = registered.scan(tmp_path, limits=registered.ScanLimits(entries=10))
    assert result.found == []
    assert [s["reason"] for s in result.skipped] == ["the scan stopped after 10 entries; scan a smaller folder"]
