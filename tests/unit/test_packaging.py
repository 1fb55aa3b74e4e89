"""pyproject.toml lists the packages by hand (a mapped folder cannot be discovered), and an
image installs only what it lists: a new API folder left out serves in the editable checkout
and fails in the image. Every folder with an __init__.py must be listed, and nothing else."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join((name, *rel.parts)))
    assert set(config["packages"]) == found
