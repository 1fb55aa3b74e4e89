"""Path traversal, sent as raw bytes on a socket (an HTTP client would normalise the path).

Sentinel models sit outside models/, where a traversal would land: the store's root
(models/..), a sibling folder (models/../sentinel) and the folder above the store
(models/../..). Each is a complete model (model.json and model.gguf), so a route that
resolved an id onto one of them would find a model there, and could read, replace or
delete it. Every attempt on every route that takes an id must leave them byte for byte,
and be answered 400, or 404 only on a route that reads (a 404 there means the id was
turned away before any lookup on disk, since a lookup would have found a sentinel).
"""
from __future__ import annotations

import json
import socket

import httpx
import pytest

from support.modelfiles import make_gguf

KEY = "1234"
# Ids as they appear in a request path, undecoded.
PATH_IDS = [
    "..", "../..", "../sentinel", "%2e%2e", "%2E%2E", ".%2e", "..%2f..", "..%2F..%2Fsentinel",
    "..%252f..", "%2e%2e%2f%2e%2e", "..%5c..", "..\\..", "..;", "..%00", "%2e%2e%2fsentinel",
    ".", "%2e", "a/../..", "a/../../sentinel", "m/../..", "....//....//",
]
# Ids as they appear in a JSON body.
BODY_IDS = ["..", "../..", "../sentinel", "..\\sentinel", "/etc", ".", "./..", "sentinel/../.."]


def sentinel_model(folder, seed):
    folder.mkdir(exist_ok=True)
    data = make_gguf(folder / "model.gguf", 20_000, seed=seed).read_bytes()
    meta = {"id": folder.name, "version": "1", "kind": "llm", "createdAt": 0,
            "files": {"model": {"name": "model.gguf", "size": len(data), "sha256": "0" * 64}},
            "totalSize": len(data)}
    (folder / "model.json").write_text(json.dumps(meta))


def snapshot(folders) -> dict:
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from support.servers import Server

    top = tmp_path_factory.mktemp("traversal") / "outside"
    store = top / "store"
    store.mkdir(parents=True)
    folders = [top, store, store / "sentinel"]
    for seed, folder in enumerate(folders):
        sentinel_model(folder, seed)
    server = Server(store, api_key=KEY, log_path=top.parent / "server.log").start()
    # A real model too: a traversal that resolves onto it ("m/..") must not harm it either.
    auth = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{server.url}/store/v1/models", json={"id": "m", "version": "1", "kind": "llm"},
               headers=auth).raise_for_status()
    httpx.post(f"{server.url}/store/v1/models/m/upload", files={"file": b"GGUF" + b"\0" * 64},
               headers=auth)
    folders.append(store / "models" / "m")
    before = snapshot(folders)
    yield server, folders, before
    server.stop()


def raw(server, method: str, target: str, body: bytes = b"", headers: dict | None = None):
    """One request with `target` sent exactly as given. (status, parsed JSON or None)."""
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {KEY}",
            "Connection: close", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    payload = data.split(b"\r\n\r\n", 1)[1]
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


UPLOAD = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"
          b"GGUF\0\0\0\0\r\n--b--\r\n")
JSON = {"Content-Type": "application/json"}


def path_requests(model_id: str):
    """(method, target, body, headers, may_404) for every route with an id in its path."""
    for prefix in ("/store/v1", "/mimik-ai/store/v1"):
        base = f"{prefix}/models/{model_id}"
        yield "GET", base, b"", {}, True
        yield "HEAD", base + "?alt=media", b"", {}, True
        yield "GET", base + "?alt=media", b"", {}, True
        yield "DELETE", base, b"", {}, False
        yield "POST", base + "/upload", UPLOAD, {"Content-Type": "multipart/form-data; boundary=b"}, False
        yield "POST", base + "/download", b'{"url": "http://127.0.0.1:9/x.gguf"}', JSON, False
    for prefix in ("/v1", "/mimik-ai/openai/v1"):
        yield "GET", f"{prefix}/models/{model_id}", b"", {}, True
        yield "DELETE", f"{prefix}/models/{model_id}", b"", {}, True  # unloads: touches no file
    yield "GET", f"/v2/models/{model_id}", b"", {}, True
    yield "GET", f"/v2/models/{model_id}/ready", b"", {}, True
    infer = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    yield "POST", f"/v2/models/{model_id}/infer", json.dumps(infer).encode(), JSON, True


def body_requests(model_id: str):
    """The same for routes that take the id in a JSON body."""
    def js(obj):
        return json.dumps(obj).encode()

    for prefix in ("/store/v1", "/mimik-ai/store/v1"):
        yield "POST", f"{prefix}/models", js({"id": model_id, "version": "1", "kind": "llm"}), JSON, False
        yield "PUT", f"{prefix}/models", js({"id": model_id, "action": "update", "version": "2"}), JSON, False
    for prefix in ("/v1", "/mimik-ai/openai/v1"):
        yield "POST", f"{prefix}/models", js({"model": model_id}), JSON, True
        yield "POST", f"{prefix}/chat/completions", js(
            {"model": model_id, "messages": [{"role": "user", "content": "hi"}]}), JSON, True
        yield "POST", f"{prefix}/completions", js({"model": model_id, "prompt": "hi"}), JSON, True
        yield "POST", f"{prefix}/embeddings", js({"model": model_id, "input": "hi"}), JSON, True


def check(planted, requests):
    server, folders, before = planted
    wrong = []
    for method, target, body, headers, may_404 in requests:
        status, payload = raw(server, method, target, body, headers)
        allowed = (400, 404) if may_404 else (400,)
        # A bare "." or ".." segment under /models/ can also be the list route's own path
        # for a router: only an answer that names an error is acceptable then too.
        if status not in allowed or (method != "HEAD" and not (payload or {}).get("error")):
            wrong.append(f"{method} {target} {body[:60]!r} -> {status} {payload}")
    assert not wrong, "\n".join(wrong)
    assert snapshot(folders) == before


@pytest.mark.parametrize("model_id", PATH_IDS)
def test_ids_in_paths_never_escape(planted, model_id):
    check(planted, path_requests(model_id))


@pytest.mark.parametrize("model_id", BODY_IDS)
def test_ids_in_bodies_never_escape(planted, model_id):
    check(planted, body_requests(model_id))
