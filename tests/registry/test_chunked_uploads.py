"""Bodies sent chunked (Transfer-Encoding: chunked, no Content-Length), as Go's net/http sends
any io.Reader of unknown length and `ollama create` streams a blob: accepted on every route
that takes a body, streamed to disk, hashed on the way, and bounded by --max-upload-size (a
413 once the bound is passed, nothing left behind). And the kind of an uploaded GGUF settles
from its file: an llm that pools is an embedding model (issue 20, items 1 and 2)."""
from __future__ import annotations

import hashlib
import json
import os
import socket

import httpx
import pytest

from clients import ollama_go_client as ollama_go
from support.modelfiles import make_gguf, make_pooling_gguf
from support.rawhttp import read_all, statuses
from support.servers import Server

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 100_000
BOUNDARY = "------------------------d74496d66958873e"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunked")
    server = Server(root / "store", api_key=KEY, args=("--max-upload-size", str(LIMIT)),
                    log_path=root / "server.log").start()
    yield server
    server.stop()


def form(name: str, data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"m.gguf\"\r\n\r\n"
            ).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def chunked(body: bytes, size: int = 7000) -> bytes:
    """`body` in Transfer-Encoding: chunked framing, `size` bytes a chunk."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def request(path: str, framed: bytes, content_type: str, close: bool = False) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n").encode() + framed


def exchange(server, raw: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def create(server, model_id: str, kind: str = "llm") -> None:
    # chunked as well: a JSON body with no Content-Length
    body = json.dumps({"id": model_id, "version": "1", "kind": kind}).encode()
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH, content=iter([body[:10], body[10:]]))
    assert r.status_code == 201, r.text


def test_a_chunked_upload_is_stored_and_the_connection_stays_in_step(server, tmp_path):
    create(server, "m")
    data = make_gguf(tmp_path / "m.gguf", 60_000).read_bytes()
    upload = request("/store/v1/models/m/upload", chunked(form("file", data)),
                     f"multipart/form-data; boundary={BOUNDARY}")
    get = b"GET /store/v1/models/m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw = exchange(server, upload + get)  # pipelined: the GET must still be answered
    assert statuses(raw) == [200, 200], raw[:600]
    model = httpx.get(f"{server.url}/store/v1/models/m").json()
    assert model["readyToUse"] is True and model["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_chunked_blob_is_stored_under_its_digest(server, tmp_path):
    data = os.urandom(90_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    raw = exchange(server, request(f"/api/blobs/{digest}", chunked(data, 4096), "application/octet-stream",
                                   close=True))
    assert statuses(raw) == [201], raw[:600]
    assert (server.store / "blobs" / digest.replace(":", "-")).read_bytes() == data


def test_chunked_bodies_over_the_limit_are_413_and_leave_nothing(server, tmp_path):
    create(server, "big")
    data = make_gguf(tmp_path / "big.gguf", 120_000).read_bytes()
    raw = exchange(server, request("/store/v1/models/big/upload", chunked(form("file", data)),
                                   f"multipart/form-data; boundary={BOUNDARY}", close=True))
    assert statuses(raw) == [413], raw[:600]
    assert f"the limit is {LIMIT} bytes".encode() in raw
    folder = server.store / "models" / "big"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["model.json"]
    assert httpx.get(f"{server.url}/store/v1/models/big").json()["readyToUse"] is False

    # what `ollama create` sends for a file over the limit: megabytes, chunked, by Go's client
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    got = ollama_go.run(ollama_go.build(), server.url, KEY, "create-blob", str(big))
    assert got.get("status") == 413 and str(LIMIT) in got["error"], got
    digest = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    assert httpx.head(f"{server.url}/api/blobs/{digest}", headers=AUTH).status_code == 404
    assert not list((server.store / "blobs").glob(".upload-*"))


@pytest.mark.parametrize("framed, why", [
    (b"zz\r\nabc\r\n0\r\n\r\n", "a chunk size that is not hex"),
    (b"ffff\r\nabc", "cut off: the client stops sending"),
])
def test_a_malformed_or_cut_off_chunked_body_is_400(server, framed, why):
    digest = "sha256:" + "0" * 64
    raw = exchange(server, request(f"/api/blobs/{digest}", framed, "application/octet-stream", close=True),
                   half_close=True)
    assert statuses(raw) == [400], (why, raw[:600])
    assert b"chunked request body" in raw
    assert not list((server.store / "blobs").glob(".upload-*"))


def test_an_llm_upload_whose_file_pools_is_an_embed(server, tmp_path):
    create(server, "pools", kind="llm")
    data = make_pooling_gguf(tmp_path / "pools.gguf").read_bytes()
    r = httpx.post(f"{server.url}/store/v1/models/pools/upload", headers=AUTH, files={"file": ("m.gguf", data)})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "embed" and r.json()["readyToUse"] is True
    assert httpx.get(f"{server.url}/store/v1/models/pools").json()["kind"] == "embed"
