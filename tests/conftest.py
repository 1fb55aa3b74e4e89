"""Fixtures shared by every tier."""
from __future__ import annotations

import os

import pytest

from support.servers import Server

# The tests' hub stand-ins and registries listen on loopback, which the egress policy refuses
# by default (docs/security.md): the servers and `modelyard fetch` runs the tests start
# inherit this and allow it. tests/registry/test_egress.py starts its own with less.
os.environ.setdefault("MODELYARD_ALLOW_FETCH", "127.0.0.0/8,::1")


@pytest.fixture
def server_factory(tmp_path):
    """Start real servers: server_factory(store_dir=None, api_key=None, env=None, args=())."""
    started: list[Server] = []

    def start(store_dir=None, api_key=None, env=None, args=(), wait_ready=False):
        store = store_dir or tmp_path / f"store{len(started)}"
        server = Server(store, api_key=api_key, env=env, args=args, log_path=tmp_path / f"server{len(started)}.log")
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory):
    """A server with API key '1234', the mModelStore API's example key."""
    return server_factory(api_key="1234")
