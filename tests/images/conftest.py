"""The Dockerfile's images, built and run with podman (marker `images`).

The images are built once per session. The server image reuses the host's
llama-cpp-python wheel (built by the Makefile) through the Dockerfile's `wheels` build
context, so the session does not compile llama.cpp a second time.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import imagebuild  # noqa: E402
from imagebuild import TIMINGS  # noqa: E402

SERVER_TAG = "localhost/modelyard-server:test"
OPERATOR_TAG = "localhost/modelyard-operator:test"
TOOLS = ("podman", "runc", "debootstrap", "slirp4netns")


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in TIMINGS.items())
        terminalreporter.write_line(f"images: {parts}")


@pytest.fixture(scope="session")
def image_log(tmp_path_factory) -> Path:
    """Where debootstrap's and podman build's output goes (their last lines show on failure)."""
    return tmp_path_factory.mktemp("images") / "build.log"


@pytest.fixture(scope="session")
def base_image(image_log) -> str:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the image tests need {', '.join(missing)}: `sh tools/image_tools.sh` "
                    "installs them (make test runs it)")
    began = time.monotonic()
    tag = imagebuild.base_image(image_log)
    TIMINGS["base image"] = time.monotonic() - began
    return tag


@pytest.fixture(scope="session")
def llama_wheels() -> Path | None:
    return imagebuild.llama_wheels()


@pytest.fixture(scope="session")
def server_image(base_image, llama_wheels, image_log) -> str:
    TIMINGS["server build"] = imagebuild.build("server", SERVER_TAG, base=base_image,
                                               wheels=llama_wheels, log=image_log)
    return SERVER_TAG


@pytest.fixture(scope="session")
def operator_image(base_image, image_log) -> str:
    TIMINGS["operator build"] = imagebuild.build("operator", OPERATOR_TAG, base=base_image,
                                                 log=image_log)
    return OPERATOR_TAG
