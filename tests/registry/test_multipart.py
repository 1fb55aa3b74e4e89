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


# ---- exact positions, limits and messages (each one kills a mutant that the split tests miss) --


def scan_fresh_buffers(raw: bytes, sizes, boundary: bytes = BOUNDARY) -> list[tuple[str, bytes]]:
    """Feed `raw` as uploads.receive does across buffers: the undecided bytes of one buffer
    start the next one at offset 0 (so a delimiter can sit at index 0)."""
    scanner, parts, carry, offset = Scanner(boundary), [], b"", 0
    sizes = iter(sizes)
    while not scanner.done:
        assert offset < len(raw), "scanner wants more than the body has"
        n = next(sizes)
        buf = bytearray(carry + raw[offset:offset + n])
        offset += n
        events, stop = scanner.scan(buf, 0, len(buf))
        for e in events:
            if isinstance(e, PartStart):
                parts.append((e.name, bytearray()))
            else:
                parts[-1][1].extend(buf[e.start:e.stop])
        carry = bytes(buf[stop:])
    return [(name, bytes(data)) for name, data in parts]


@pytest.mark.parametrize("seed", range(40))
def test_fresh_buffers_with_carried_bytes_give_the_same_parts(seed):
    rng = random.Random(seed)
    parts = [("file", TRICKY * rng.randint(0, 3) + bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))),
             ("mmproj", TRICKY)]
    raw = body(*parts, preamble=b"x" * rng.randint(0, 50))
    sizes = [rng.randint(1, 60) for _ in range(len(raw))]
    assert scan_fresh_buffers(raw, sizes) == parts


def test_a_delimiter_at_the_very_start_of_a_buffer():
    raw = body(("file", b"abc"))
    cut = raw.index(b"abc") + 3  # the next buffer starts with the delimiter's CRLF
    assert scan_fresh_buffers(raw, [cut, len(raw)]) == [("file", b"abc")]


def test_scan_reports_exactly_how_far_it_got():
    s = Scanner(b"B")
    buf = bytearray(b"junk--")  # "--B" may begin at the last two bytes
    assert s.scan(buf, 0, len(buf)) == ([], len(buf) - 2)
    buf = bytearray(b"--B-")  # one byte after the boundary cannot be decided
    assert s.scan(buf, 0, len(buf)) == ([], 3)
    buf = bytearray(b"--B--epilogue")
    assert s.scan(buf, 3, len(buf)) == ([], 5) and s.done

    s = Scanner(b"B")
    buf = bytearray(b"--B\r\nC")  # one byte of headers cannot be decided
    assert s.scan(buf, 0, len(buf)) == ([], 5)
    buf = bytearray(b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\n0123456789')
    events, stop = s.scan(buf, 5, len(buf))
    # data up to the last len("\r\n--B") - 1 bytes, which may begin a delimiter
    assert events == [PartStart("f", None), Data(buf.index(b"0"), len(buf) - 4)] and stop == len(buf) - 4
    buf += b"\r\n--B--"
    assert s.scan(buf, stop, len(buf)) == ([Data(stop, stop + 4)], len(buf)) and s.done


def test_scan_looks_only_between_start_and_end():
    s = Scanner(b"B")
    # A boundary before `start` was consumed already; one after `end` is not here yet.
    buf = bytearray(b"--B\r\n" + b"x" * 10 + b"--B--")
    assert s.scan(buf, 5, 15) == ([], 13)
    assert not s.done
    s = Scanner(b"B")
    buf = bytearray(b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\ndata\r\n--B--')
    end = buf.index(b"\r\n--B--")
    events, stop = s.scan(buf, 0, end)
    # "data" is 4 bytes, as long as a delimiter's undecidable tail: nothing is sure yet
    assert events == [PartStart("f", None)] and stop == end - 4 and not s.done


def test_the_preamble_limit_is_exact_and_counts_across_calls():
    from modelyard.server.http.multipart import MAX_PREAMBLE

    first = b"--" + BOUNDARY
    ok = b"p" * MAX_PREAMBLE + first + b"--"
    assert scan_in_pieces(ok, [len(ok)]) == []
    with pytest.raises(MultipartError) as caught:
        bad = b"p" * (MAX_PREAMBLE + 1) + first + b"--"
        scan_in_pieces(bad, [len(bad)])
    assert str(caught.value) == "The body does not start with the multipart boundary given in Content-Type"
    # the count adds up over calls: two halves under the limit make one over it
    s = Scanner(BOUNDARY)
    half = bytearray(b"p" * (MAX_PREAMBLE // 2 + 100))
    s.scan(half, 0, len(half))
    with pytest.raises(MultipartError):
        s.scan(half, 0, len(half))


def test_messages_are_exact():
    def error(raw):
        with pytest.raises(MultipartError) as caught:
            scan_in_pieces(raw + b"\r\n--B--\r\n", [len(raw) + 9], boundary=b"B")
        return str(caught.value)

    assert error(b"--BXX") == "A multipart boundary is not followed by CRLF or '--'"
    assert error(b"--B\r\n\r\n") == "A multipart part has no Content-Disposition header"
    assert error(b"--B\r\nContent-Type: a\r\n\r\n") == "A multipart part has no Content-Disposition name"
    assert error(b"--B\r\nContent-Disposition: attachment\r\n\r\n") == \
        "A part's Content-Disposition must be form-data, not 'attachment'"
    long_line = b"y" * 100
    assert error(b"--B\r\n" + long_line + b"\r\n\r\n") == f"Malformed multipart part header {'y' * 80!r}"
    assert error(b"--B\r\nX: " + b"a" * MAX_HEADERS) == f"A multipart part's headers exceed {MAX_HEADERS} bytes"


def test_headers_exactly_at_the_limit_wait_for_more():
    s = Scanner(b"B")
    buf = bytearray(b"--B\r\n" + b"X" * MAX_HEADERS)
    assert s.scan(buf, 0, len(buf)) == ([], 5)  # not over the limit yet: wait


def test_part_headers_in_any_order_and_odd_values():
    raw = (b'--B\r\nContent-Type: application/octet-stream\r\n'
           b'Content-Disposition: form-data; name="file"; filename="a:b\xff.gguf"\r\n\r\nx\r\n--B--')
    s = Scanner(b"B")
    events, _ = s.scan(bytearray(raw), 0, len(raw))
    assert events[0] == PartStart("file", "a:b\ufffd.gguf")
    raw = b'--B\r\ncontent-disposition: FORM-DATA; name="f"\r\n\r\nx\r\n--B--'
    events, _ = Scanner(b"B").scan(bytearray(raw), 0, len(raw))
    assert events[0] == PartStart("f", None)


def test_boundary_of_messages_and_limits():
    assert boundary_of("multipart/form-data; boundary=b") == b"b"
    assert boundary_of("multipart/form-data; boundary=\xe9") == b"\xe9"
    with pytest.raises(MultipartError) as caught:
        boundary_of("text/plain; boundary=b")
    assert str(caught.value) == "Content-Type must be multipart/form-data, not 'text/plain'"
    with pytest.raises(MultipartError) as caught:
        boundary_of("multipart/form-data")
    assert str(caught.value) == ("Content-Type multipart/form-data needs a boundary parameter "
                                 "of 1 to 70 characters")


def test_an_empty_part_whose_delimiter_starts_a_buffer():
    """Headers that end exactly at a buffer's end leave nothing to carry: the next buffer
    starts with the delimiter itself, at index 0."""
    raw = body(("file", b""))
    cut = raw.index(b"\r\n\r\n") + 4
    assert scan_fresh_buffers(raw, [cut, len(raw)]) == [("file", b"")]


def test_stale_bytes_past_end_are_never_read():
    """uploads.receive reuses its buffers: what lies past `end` is an older body's bytes."""
    s = Scanner(b"B")
    head = b'--B\r\nContent-Disposition: form-data; name="f"'
    buf = bytearray(head + b"\r\n\r\nstale")
    assert s.scan(buf, 0, len(head)) == ([], 5)  # the headers' end is not here yet


def test_the_preamble_limit_counts_from_start():
    from modelyard.server.http.multipart import MAX_PREAMBLE

    s = Scanner(BOUNDARY)
    buf = bytearray(b"z" * 100 + b"p" * MAX_PREAMBLE + b"--" + BOUNDARY + b"--")
    events, stop = s.scan(buf, 100, len(buf))
    assert s.done and stop == len(buf)
