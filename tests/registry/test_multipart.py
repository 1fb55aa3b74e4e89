"""The multipart scanner alone: any split of the body gives the same parts, bad bodies say why."""
from __future__ import annotations

import random

import pytest

from modelyard.server.http.multipart import (MAX_HEADERS, Data, MultipartError, PartStart, Scanner,
                                        boundary_of)

BOUNDARY = b"----------------------3f2a9c81d4e5b6a7"


def body(*parts: tuple[str, bytes], boundary: bytes = BOUNDARY, preamble=b"", epilogue=b"") -> bytes:
    out = preamble
    for name, data in parts:
        out += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name.encode()
                + b"\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return out + b"--" + boundary + b"--\r\n" + epilogue


def scan_in_pieces(raw: bytes, sizes, boundary: bytes = BOUNDARY) -> list[tuple[str, bytes]]:
    """Feed `raw` the way uploads.receive does: a growing buffer, undecided bytes carried over."""
    scanner, parts, buf, start, offset = Scanner(boundary), [], bytearray(), 0, 0
    sizes = iter(sizes)
    while not scanner.done:
        if offset >= len(raw):
            raise AssertionError("scanner wants more than the body has")
        n = next(sizes)
        buf += raw[offset:offset + n]
        offset += n
        events, start = scanner.scan(buf, start, len(buf))
        for e in events:
            if isinstance(e, PartStart):
                parts.append((e.name, bytearray()))
            else:
                assert isinstance(e, Data) and e.stop > e.start
                parts[-1][1].extend(buf[e.start:e.stop])
    return [(name, bytes(data)) for name, data in parts]


# Data that looks like the delimiter without being it: CRLF, dashes, a prefix of the boundary.
TRICKY = b"\r\n--" + BOUNDARY[:-1] + b"X\r\n\r\n--\r" + b"-" * 50 + b"\r\n-" + BOUNDARY[:10]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 41, 4096])
def test_every_split_gives_the_same_parts(step):
    parts = [("file", TRICKY + bytes(range(256)) * 20), ("mmproj", b""), ("other", TRICKY[::-1])]
    raw = body(*parts, preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")
    assert scan_in_pieces(raw, iter(lambda: step, None)) == parts


def test_random_splits():
    rng = random.Random(7)
    parts = [("file", rng.randbytes(50_000) + TRICKY), ("mmproj", TRICKY + rng.randbytes(999))]
    raw = body(*parts)
    for _ in range(30):
        assert scan_in_pieces(raw, iter(lambda: rng.randint(1, 3000), None)) == parts


def test_data_reaches_right_up_to_the_delimiter():
    """The CRLF before the delimiter is not data; one just before it is."""
    raw = body(("file", b"ends with CRLF\r\n"))
    assert scan_in_pieces(raw, [len(raw)]) == [("file", b"ends with CRLF\r\n")]


@pytest.mark.parametrize("raw, words", [
    (b"no boundary at all " * 2000, "does not start with the multipart boundary"),
    (b"--" + BOUNDARY + b"XX", "not followed by CRLF"),
    (b"--" + BOUNDARY + b"\r\n\r\ndata", "no Content-Disposition header"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\ndata", "no Content-Disposition name"),
    (b"--" + BOUNDARY + b"\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n", "must be form-data"),
    (b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\n", "Malformed multipart part header"),
    (b"--" + BOUNDARY + b"\r\nX-Long: " + b"a" * MAX_HEADERS, "headers exceed"),
])
def test_malformed_bodies_say_what_is_wrong(raw, words):
    with pytest.raises(MultipartError, match=words):
        scan_in_pieces(raw + b"\r\n--" + BOUNDARY + b"--\r\n", [len(raw) + 100])


def test_a_truncated_body_is_not_done():
    raw = body(("file", b"x" * 1000))
    scanner = Scanner(BOUNDARY)
    buf = bytearray(raw[:-20])
    scanner.scan(buf, 0, len(buf))
    assert not scanner.done


@pytest.mark.parametrize("content_type, expected", [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="a b:c"', b"a b:c"),
    ("Multipart/Form-Data; charset=utf-8; boundary=" + "x" * 70, b"x" * 70),
])
def test_boundary_of(content_type, expected):
    assert boundary_of(content_type) == expected


@pytest.mark.parametrize("content_type", [
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "x" * 71,
    "multipart/mixed; boundary=abc",
])
def test_boundary_of_refuses(content_type):
    with pytest.raises(MultipartError):
        boundary_of(content_type)
