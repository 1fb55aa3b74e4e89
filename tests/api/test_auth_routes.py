"""Auth is decided from the route Falcon matched, never from the raw path (issue 19, item 1),
a wrong key answers in each API's own terms (issue 20, item 4), and a keyless server answers
only requests addressed to the machine itself (issue 19, item 7: DNS rebinding).

Requests go over raw sockets: an HTTP client would normalise `//` and `%2F` away before
sending, and those spellings are the attack.
"""
from __future__ import annotations

import json
import re
import socket

import falcon
import falcon.testing
import pytest

from modelyard.server.api.families import FAMILIES
from modelyard.server.http.auth import AuthMiddleware
from modelyard.server.http.errors import default_error_body
from modelyard.server.http.routes import Guard, RouteRule, RouteRules
from support.servers import Server

KEY = "1234"


def raw(url: str, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, dict]:
    """One request exactly as written (no normalisation of the path); (status, JSON body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = {"Host": f"{host}:{port}", "Connection": "close", "Content-Length": str(len(body)),
            "Content-Type": "application/json", **(headers or {})}
    request = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items() if v is not None)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request.encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    try:
        return status, json.loads(payload) if payload else {}
    except ValueError:
        return status, {}


def _concrete(template: str) -> str:
    """A path of the template: the model `chat`, a well-formed blob digest."""
    return re.sub(r"\{[^}]+\}", lambda m: "sha256:" + "0" * 64 if m.group(0) == "{digest}" else "chat", template)


def _guarded():
    """(method, path, bad-key status) of every declared operation that needs the key."""
    for family in FAMILIES:
        for template, route in family.templates():
            for op in route.ops:
                method = op.method.upper()
                if route.guard.needs_key(method):
                    yield method, _concrete(template), family.bad_key_status


GUARDED = sorted(set(_guarded()))


def _spellings(path: str) -> list[str]:
    return [path, "/" + path, "/%2F" + path.lstrip("/"), "/%2f" + path.lstrip("/")]


def test_every_route_declares_a_guard_and_the_server_routes_are_guarded():
    assert GUARDED, "no guarded route declared"
    open_routes = {t for f in FAMILIES for t, r in f.templates() if r.guard is Guard.OPEN}
    # Only probes, scrapes and the clients' "is it running" checks are open.
    assert open_routes == {"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/status", "/health"}


@pytest.mark.parametrize("method,path,bad_key", GUARDED, ids=[f"{m} {p}" for m, p, _ in GUARDED])
def test_no_spelling_of_a_guarded_route_skips_the_key(fuzz_server, method, path, bad_key):
    for spelled in _spellings(path):
        status, _ = raw(fuzz_server.url, method, spelled, body=b"{}")
        assert status == 401, (method, spelled, status)
    # Slashes doubled inside the path match no route: nothing is served.
    assert raw(fuzz_server.url, method, path.replace("/", "//"), body=b"{}")[0] in (401, 404)
    status, _ = raw(fuzz_server.url, method, "/" + path, {"Authorization": "Bearer wrong"}, b"{}")
    assert status == bad_key, (method, path, status)


def test_errors_of_odd_spellings_keep_the_familys_shape(fuzz_server):
    status, body = raw(fuzz_server.url, "POST", "//v1/chat/completions", body=b"{}")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, body = raw(fuzz_server.url, "POST", "/%2Fv1/messages", {"x-api-key": "wrong"}, b"{}")
    assert status == 401 and body == {"type": "error", "error": {"type": "authentication_error",
                                                                  "message": "Invalid API key"}}
    status, body = raw(fuzz_server.url, "POST", "//store/v1/models", {"Authorization": "Bearer wrong"}, b"{}")
    assert status == 403 and body == {"error": {"code": 403, "message": "Invalid API key"}}
    status, body = raw(fuzz_server.url, "GET", "//v1/models", {"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["type"] == "invalid_api_key"


def test_open_routes_and_registry_reads_need_no_key(fuzz_server):
    for path in ("/healthz", "//healthz", "/metrics", "/openapi.json", "//store/v1/models", "/store/v1/models/chat"):
        status, _ = raw(fuzz_server.url, "GET", path)
        assert status == 200, path
    assert raw(fuzz_server.url, "GET", "/v1/models", {"Authorization": f"Bearer {KEY}"})[0] == 200


def test_a_route_without_a_declaration_needs_the_key():
    """Nothing is open by default: the middleware refuses a route its table does not know."""
    app = falcon.App(middleware=[AuthMiddleware(KEY, RouteRules(RouteRule(Guard.KEY, default_error_body)))])

    class Hello:
        def on_get(self, req, resp):
            resp.media = {"hello": True}

    app.add_route("/undeclared", Hello())
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/undeclared").status_code == 401
    assert client.simulate_get("/undeclared", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.fixture(scope="module")
def keyless(tmp_path_factory):
    d = tmp_path_factory.mktemp("keyless")
    server = Server(d / "store", args=("--allowed-host", "models.lan")).start()
    yield server
    server.stop()


@pytest.mark.parametrize("host,allowed", [
    ("127.0.0.1", True), ("localhost", True), ("LOCALHOST", True), ("app.localhost", True), ("[::1]", True),
    ("127.16.0.9", True), ("models.lan", True),
    ("evil.example", False), ("attacker.com:80", False), ("localhost.evil.example", False), ("10.0.0.5", False),
])
def test_a_keyless_server_answers_only_its_own_host_names(keyless, host, allowed):
    port = keyless.url.rsplit(":", 1)[1]
    name = host if ":" in host and not host.startswith("[") else f"{host}:{port}"
    status, body = raw(keyless.url, "GET", "/api/tags", {"Host": name})
    if allowed:
        assert status == 200, (host, body)
    else:
        assert status == 403 and "DNS rebinding" in body["error"], (host, body)


def test_a_keyed_server_answers_any_host(fuzz_server):
    status, _ = raw(fuzz_server.url, "GET", "/api/tags", {"Host": "models.example.com",
                                                        "Authorization": f"Bearer {KEY}"})
    assert status == 200
