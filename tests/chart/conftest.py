"""Fixtures for the chart tests: the real helm binary, and a renderer."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .binaries import ROOT, tool

CHART = ROOT / "charts" / "modelyard"


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


@pytest.fixture(scope="session")
def render(helm):
    """render(*helm_args) -> the manifests of `helm template`, as dicts."""

    def run(*args: str, namespace: str = "modelyard-system") -> list[dict[str, Any]]:
        done = subprocess.run(
            [str(helm), "template", "my", str(CHART), "--namespace", namespace, *args],
            capture_output=True, text=True, check=False,
        )
        if done.returncode:
            raise RenderError(done.stderr)
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return run


class RenderError(Exception):
    pass
