"""The operator image: it starts, prints its help, and carries no inference engine."""
from __future__ import annotations

import pytest

from imagebuild import podman

pytestmark = pytest.mark.images


def test_operator_image_starts_and_prints_its_help(operator_image):
    # As the chart's pod runs it: non-root, read-only root filesystem, no capabilities.
    done = podman("run", "--rm", "--read-only", "--read-only-tmpfs=false", "--cap-drop", "all",
                  "--security-opt", "no-new-privileges", operator_image, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage: modelyard operator"), done.stdout
    assert "--namespace" in done.stdout and "--all-namespaces" in done.stdout
    assert podman("image", "inspect", "--format", "{{.Config.User}}", operator_image).stdout.strip() == "10001:10001"


def test_operator_image_has_kopf_and_no_llama_cpp(operator_image):
    script = "import importlib.util as u; print(bool(u.find_spec('kopf')), bool(u.find_spec('llama_cpp')))"
    done = podman("run", "--rm", "--entrypoint", "python3", operator_image, "-c", script, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr
