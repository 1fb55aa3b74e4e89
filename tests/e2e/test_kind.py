"""The kind end-to-end suite as a pytest test (opt-in: `pytest -m e2e tests/e2e`)."""
import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).with_name("run.sh")


def docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(not docker_engine(), reason="no Docker engine ('docker info' failed): kind cannot run here")
def test_kind_end_to_end():
    done = subprocess.run(["bash", str(RUN)], capture_output=True, text=True, timeout=3 * 3600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "PASSED: e2e" in done.stdout
