"""CORS against a real gunicorn: preflight requests as browsers send them, from an allowed
and from a refused origin, with the default (the machine's own origins), with origins set
by flag and by environment variable, and with `*`."""
from __future__ import annotations

import httpx
import pytest

from support.servers import Server

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = []

    def start(*args, env=None) -> Server:
        root = tmp_path_factory.mktemp("cors")
        server = Server(root / "store", api_key=KEY, args=args, env=env, log_path=root / "server.log")
        started.append(server)
        return server.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def default(servers):
    return servers()


@pytest.fixture(scope="module")
def configured(servers):
    # by the environment (the flag, tested with '*' below, overrides it as flags do)
    return servers(env={"MODELYARD_CORS_ORIGINS": "https://app.example.com, https://*.tools.example app://*"})


def preflight(server: Server, origin: str, path: str = "/api/chat", method: str = "POST") -> httpx.Response:
    # as a browser sends it: no credentials, the method and headers it wants to use
    return httpx.options(server.url + path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_a_local_origin_is_allowed_by_default(default):
    r = preflight(default, "http://localhost:5173")
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    assert int(r.headers["access-control-max-age"]) > 0
    assert "origin" in r.headers["vary"].lower()
    # the request that follows gets the header too, and still needs the key
    r = httpx.get(default.url + "/api/models", headers={"Origin": "http://127.0.0.1:3000", **AUTH})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    r = httpx.get(default.url + "/api/models", headers={"Origin": "http://127.0.0.1:3000"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"


def test_another_origin_is_refused_by_default(default):
    for origin in ("https://evil.example", "http://localhost.evil.example", "http://localhost:80.evil.example",
                   "null"):
        r = preflight(default, origin)
        assert r.status_code == 403, (origin, r.text)
        assert "access-control-allow-origin" not in r.headers
        assert "not allowed" in r.text
        # and the request itself, which a browser may send without a preflight
        r = httpx.post(default.url + "/api/chat", headers={"Origin": origin, **AUTH},
                       json={"model": "x", "messages": []})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_requests_without_an_origin_are_untouched(default):
    r = httpx.get(default.url + "/api/models", headers=AUTH)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert httpx.get(default.url + "/healthz").status_code == 200


def test_origins_from_the_environment(configured):
    for origin in ("https://app.example.com", "https://ci.tools.example", "app://desktop", "http://localhost:8080"):
        r = preflight(configured, origin, path="/v1/chat/completions")
        assert r.status_code == 204, (origin, r.text)
        assert r.headers["access-control-allow-origin"] == origin
    for origin in ("https://other.example.com", "http://app.example.com", "https://app.example.com:8443",
                   "https://tools.example"):
        r = preflight(configured, origin, path="/v1/chat/completions")
        assert r.status_code == 403, origin
        assert "access-control-allow-origin" not in r.headers


def test_star_by_flag_allows_every_origin(servers):
    server = servers("--cors-origin", "*", env={"MODELYARD_CORS_ORIGINS": "https://app.example.com"})
    r = preflight(server, "https://anywhere.example", path="/api/generate")
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    r = httpx.get(server.url + "/api/models", headers={"Origin": "https://anywhere.example", **AUTH})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
