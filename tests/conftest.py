"""Fixtures shared by every tier."""
from __future__ import annotations

import pytest

from support.servers import Server


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
