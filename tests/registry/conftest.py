"""The hostile side of the egress and pull-limit tests (test_egress.py, test_pull_limits.py):
a registry of the tests' own on 127.0.0.2 that lies as each test tells it, an "internal"
service on 127.0.0.1 that no fetch may reach, and one real server that allows fetches
from 127.0.0.2 only. Everything listens on loopback."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.hubs import FileHub
from support.modelfiles import make_gguf
from support.registries import HOSTILE_HOST, KEY, SECRET, HostileRegistry
from support.servers import Server


@pytest.fixture(scope="session")
def internal():
    """A service inside the network (on 127.0.0.1): the egress policy must keep every fetch
    away from it, so its log stays empty."""
    with FileHub() as hub:
        hub.add("secret", SECRET)
        hub.add_hf("org/inside", "inside-Q8_0.gguf", SECRET)
        yield hub


@pytest.fixture(scope="session")
def hostile():
    with HostileRegistry() as registry:
        yield registry


@pytest.fixture(scope="session")
def egress_server(tmp_path_factory, hostile):
    """A real server whose fetches may reach 127.0.0.2 (the hostile registry, also its
    HF_ENDPOINT) and nothing else inside: the default policy plus one allowed address."""
    root = tmp_path_factory.mktemp("egress")
    server = Server(root / "store", api_key=KEY, log_path=root / "server.log",
                    env={"MODELYARD_ALLOW_FETCH": HOSTILE_HOST, "HF_ENDPOINT": hostile.url,
                         "HF_HOME": str(root / "hf-home")})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("hostile-gguf")
    return {"model": make_gguf(folder / "m.gguf", 256 * 1024).read_bytes(),
            "projector": make_gguf(folder / "p.gguf", 64 * 1024, seed=1, arch="clip").read_bytes()}


# The hostile GGUF tests' files (test_hostile_gguf_parse.py, test_hostile_gguf_load.py), from
# gguf_mutants.py and llama_children.py beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_mutants import Base, Case, make_bases, make_cases  # noqa: E402


@pytest.fixture(scope="session")
def gguf_bases(tmp_path_factory) -> list[Base]:
    """The valid files the cases mutate: made once (small llama models take seconds)."""
    return make_bases(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="module")
def gguf_cases(gguf_bases) -> list[Case]:
    """Made again for each module (a tenth of a second), so that no session holds them all."""
    return make_cases(gguf_bases)
