"""Ollama's own Go client (github.com/ollama/ollama/api, what the `ollama` CLI is built on),
driven through the small program in tests/clients/ollama_go/, built once per machine into
the cache by tools/clients/build.sh (about 10 s with a warm Go build cache, 90 s cold)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_GO = "/usr/local/go/bin/go"


def build() -> Path:
    """The program's path; skips the calling test when the machine has no Go."""
    if shutil.which("go") is None and not os.access(_GO, os.X_OK):
        pytest.skip("Go is not installed: Ollama's Go client cannot be built (tools/clients/build.sh)")
    out = subprocess.run(["bash", str(ROOT / "tools/clients/build.sh")], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def run(program: Path, url: str, key: str, *args: str) -> dict:
    """One call of the client: what it decoded, or {"error", "status"} when it got an error."""
    out = subprocess.run([str(program), url, key, *args], capture_output=True, text=True, timeout=120)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)
