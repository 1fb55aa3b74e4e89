"""`?alt=media` and Range as RFC 9110 (section 14) has them, against a real gunicorn."""
from __future__ import annotations

import hashlib
import socket

import httpx
import pytest

from support.modelfiles import make_gguf

AUTH = {"Authorization": "Bearer 1234"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A server with one model (shared by the module: these tests only read)."""
    from support.servers import Server

    folder = tmp_path_factory.mktemp("range")
    server = Server(folder / "store", api_key="1234").start()
    data = make_gguf(folder / "m.gguf", 100_000, seed=3).read_bytes()
    httpx.post(f"{server.url}/store/v1/models", json={"id": "m", "version": "1", "kind": "llm"},
               headers=AUTH).raise_for_status()
    httpx.post(f"{server.url}/store/v1/models/m/upload", files={"file": data},
               headers=AUTH).raise_for_status()
    yield f"{server.url}/store/v1/models/m?alt=media", data
    server.stop()


def get(url, range_header=None, **headers):
    if range_header is not None:
        headers["Range"] = range_header
    return httpx.get(url, headers=headers)


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-0", 0, 0),
    ("bytes=10-19", 10, 19),
    ("bytes=90000-", 90000, None),
    ("bytes=-10", -10, None),
    ("bytes=0-999999999", 0, None),  # a last byte past the end means the end
    ("bytes=-999999999", 0, None),  # a suffix longer than the file is the file
    ("BYTES=5-9", 5, 9),  # units are case-insensitive
])
def test_one_satisfiable_range_is_206(media, header, first, last):
    url, data = media
    r = get(url, header)
    assert r.status_code == 206
    part = data[first:None if last is None else last + 1]
    assert r.content == part
    start = first if first >= 0 else len(data) + first
    assert r.headers["content-range"] == f"bytes {start}-{start + len(part) - 1}/{len(data)}"
    assert int(r.headers["content-length"]) == len(part)


@pytest.mark.parametrize("header", [
    "items=0-9",  # another unit: the header is ignored
    "bytes=9-0",  # reversed: an invalid range-spec, ignored
    "bytes=0-4,10-14",  # several ranges: answered whole, which RFC 9110 allows
    "bytes=0-0,-1",
    "bytes=abc",  # not a ranges-specifier at all
    "bytes=-",
    "bytes 0-9",
])
def test_ranges_the_server_ignores_get_the_whole_file(media, header):
    url, data = media
    r = get(url, header)
    assert r.status_code == 200, r.text
    assert r.content == data and "content-range" not in r.headers


@pytest.mark.parametrize("header", ["bytes={n}-", "bytes={n}-{m}", "bytes=-0",
                                    "bytes=99999999999999999999-"])
def test_unsatisfiable_range_is_416(media, header):
    url, data = media
    r = get(url, header.format(n=len(data), m=len(data) + 10))
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(data)}"


def test_if_range_with_the_current_etag_is_honoured_and_any_other_is_not(media):
    url, data = media
    etag = get(url).headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    assert get(url, "bytes=0-9", **{"If-Range": etag}).content == data[:10]
    stale = get(url, "bytes=0-9", **{"If-Range": '"another"'})
    assert stale.status_code == 200 and stale.content == data


def test_head_on_alt_media(media):
    url, data = media
    r = httpx.head(url)
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(data)
    assert r.headers["accept-ranges"] == "bytes" and r.content == b""
    r = httpx.head(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and int(r.headers["content-length"]) == 10
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"


def test_head_then_get_on_one_connection(media):
    """A HEAD answer carries no body, so the next response on the connection is intact."""
    url, data = media
    port = httpx.URL(url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD /store/v1/models/m?alt=media HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /store/v1/models/m?alt=media HTTP/1.1\r\nHost: x\r\n"
                     b"Range: bytes=0-3\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, rest = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 206")
    assert rest.endswith(b"\r\n\r\n" + data[:4])
