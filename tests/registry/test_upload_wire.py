"""Uploads on the wire: the server reads the body past gunicorn's reader, so the connection
must stay in step: keep-alive, pipelining, and a body refused half-way."""
from __future__ import annotations

import hashlib
import socket

import httpx

from support.modelfiles import make_gguf
from support.rawhttp import read_all, statuses

AUTH = {"Authorization": "Bearer 1234"}
BOUNDARY = "------------------------d74496d66958873e"  # curl's shape


def form(*parts: tuple[str, bytes], preamble=b"", epilogue=b"") -> bytes:
    out = preamble
    for name, data in parts:
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{name}.gguf\"\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode() + epilogue


def upload_request(model_id: str, body: bytes, close=False) -> bytes:
    return (f"POST /store/v1/models/{model_id}/upload HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer 1234\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}"
            "\r\n").encode() + body


def get_request(model_id: str) -> bytes:
    return f"GET /store/v1/models/{model_id} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def create(server, model_id="m", kind="llm"):
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                   json={"id": model_id, "version": "1", "kind": kind})
    assert r.status_code in (200, 201), r.text


def test_pipelined_requests_after_an_upload_are_answered(server, tmp_path):
    """A small body arrives with the headers in gunicorn's read-ahead, followed by the next
    request: the upload takes only its own bytes and the GET is served."""
    create(server)
    data = make_gguf(tmp_path / "m.gguf", 3000).read_bytes()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(upload_request("m", form(("file", data))) + get_request("m"))
        raw = read_all(sock)
    assert statuses(raw) == [200, 200], raw[:500]
    model = httpx.get(f"{server.url}/store/v1/models/m").json()
    assert model["readyToUse"] is True
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    assert httpx.get(f"{server.url}/store/v1/models/m?alt=media").content == data


def test_keep_alive_after_a_large_upload(server, tmp_path):
    create(server)
    data = make_gguf(tmp_path / "m.gguf", 5_000_000).read_bytes()
    with httpx.Client(headers=AUTH) as client:
        for _ in range(2):  # the second upload reuses the connection
            r = client.post(f"{server.url}/store/v1/models/m/upload", files={"file": ("m.gguf", data)})
            assert r.status_code == 200 and r.json()["readyToUse"] is True
            assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
            r = client.get(f"{server.url}/store/v1/models/m?alt=media")
            assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


def test_a_body_refused_half_way_does_not_desync_the_connection(server, tmp_path):
    """An unknown field is refused at its header with part of the body still unread.
    gunicorn drains up to 64 KiB of it and serves the next request on the connection,
    which must be read as a request, not as leftover body bytes."""
    create(server)
    data = make_gguf(tmp_path / "m.gguf", 300_000).read_bytes()  # refused after ~256 KiB
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(upload_request("m", form(("weights", data))) + get_request("m"))
        raw = read_all(sock)
    assert statuses(raw) == [400, 200], raw[:1000]
    assert b"Unknown form field 'weights'" in raw and raw.rstrip().endswith(b"}")
    assert not list((server.store / "models" / "m").glob("*.partial"))


def test_preamble_epilogue_and_two_files_in_one_body(server, tmp_path):
    create(server, "v", kind="vlm")
    model = make_gguf(tmp_path / "m.gguf", 200_000).read_bytes()
    proj = make_gguf(tmp_path / "p.gguf", 100_000, seed=1).read_bytes()
    body = form(("file", model), ("mmproj", proj), preamble=b"This is a preamble.\r\n",
                epilogue=b"and an epilogue")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(upload_request("v", body, close=True))
        raw = read_all(sock)
    assert statuses(raw) == [200], raw[:500]
    folder = server.store / "models" / "v"
    assert (folder / "model.gguf").read_bytes() == model
    assert (folder / "mmproj.gguf").read_bytes() == proj


def test_a_field_sent_twice_is_400(server, tmp_path):
    create(server)
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(upload_request("m", form(("file", data), ("file", data)), close=True))
        raw = read_all(sock)
    assert statuses(raw) == [400] and b"sent twice" in raw
    assert httpx.get(f"{server.url}/store/v1/models/m").json()["readyToUse"] is False


def test_a_body_without_its_closing_boundary_is_400(server, tmp_path):
    create(server)
    data = make_gguf(tmp_path / "m.gguf").read_bytes()
    body = form(("file", data))[:-30]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(upload_request("m", body, close=True))
        raw = read_all(sock)
    assert statuses(raw) == [400] and b"truncated" in raw
    assert httpx.get(f"{server.url}/store/v1/models/m").json()["readyToUse"] is False
