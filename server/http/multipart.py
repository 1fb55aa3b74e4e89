"""multipart/form-data as events over the caller's buffer, so file bytes are never copied.

Falcon's parser hands each part out as new `bytes` objects, and gunicorn's body reader
copies every byte twice through BytesIO before that: a multi-gigabyte upload spent most
of its time copying. This scanner only looks at a buffer the caller filled (with
recv_into) and says which byte ranges of it are a part's data, so those ranges go to
the hash and to the disk straight from that buffer.

Pure logic: no I/O here. `uploads.py` drives it.
"""
from __future__ import annotations

from dataclasses import dataclass

from falcon import parse_header

# A part's header block (Content-Disposition, Content-Type) is a few hundred bytes; this
# bounds what a client can make us buffer while looking for its end.
MAX_HEADERS = 16 * 1024
MAX_PREAMBLE = 16 * 1024


class MultipartError(ValueError):
    """The body is not the multipart/form-data it claims to be. The message says how."""


@dataclass(frozen=True)
class PartStart:
    name: str
    filename: str | None


@dataclass(frozen=True)
class Data:
    """buf[start:stop] is data of the part last started."""

    start: int
    stop: int


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_header(content_type)
    if kind.lower() != "multipart/form-data":
        raise MultipartError(f"Content-Type must be multipart/form-data, not {kind!r}")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise MultipartError("Content-Type multipart/form-data needs a boundary parameter "
                             "of 1 to 70 characters")
    return boundary.encode("latin-1")


class Scanner:
    """Feed it buffer regions in order; it returns events and how far it got."""

    def __init__(self, boundary: bytes):
        self._first = b"--" + boundary
        # Every delimiter after the first is preceded by CRLF, which belongs to it,
        # not to the data before it.
        self._delimiter = b"\r\n--" + boundary
        self._state = _PREAMBLE
        self._skipped = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def scan(self, buf: bytearray, start: int, end: int) -> tuple[list, int]:
        """Events for buf[start:end], and the offset where scanning stopped.

        The bytes from that offset to `end` could not be decided yet (a delimiter may
        begin there); offer them again, followed by more data, in the next call.
        """
        events: list = []
        pos = start
        while pos < end and self._state != _DONE:
            if self._state == _PREAMBLE:
                i = buf.find(self._first, pos, end)
                # Text before the first boundary is allowed (and ignored), within reason.
                keep = i if i >= 0 else max(pos, end - len(self._first) + 1)
                self._skipped += keep - pos
                if self._skipped > MAX_PREAMBLE:
                    raise MultipartError("The body does not start with the multipart boundary "
                                         "given in Content-Type")
                if i < 0:
                    pos = keep
                    break
                pos, self._state = i + len(self._first), _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if end - pos < 2:
                    break
                mark = buf[pos:pos + 2]
                if mark == b"--":
                    pos, self._state = pos + 2, _DONE
                elif mark == b"\r\n":
                    pos, self._state = pos + 2, _HEADERS
                else:
                    raise MultipartError("A multipart boundary is not followed by CRLF or '--'")
            elif self._state == _HEADERS:
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] == b"\r\n":
                    raise MultipartError("A multipart part has no Content-Disposition header")
                i = buf.find(b"\r\n\r\n", pos, end)
                if i < 0:
                    if end - pos > MAX_HEADERS:
                        raise MultipartError(f"A multipart part's headers exceed {MAX_HEADERS} bytes")
                    break
                events.append(_part_start(bytes(buf[pos:i])))
                pos, self._state = i + 4, _BODY
            else:  # _BODY
                i = buf.find(self._delimiter, pos, end)
                if i < 0:
                    # Everything before the last len(delimiter)-1 bytes is surely data.
                    safe = max(pos, end - len(self._delimiter) + 1)
                    if safe > pos:
                        events.append(Data(pos, safe))
                    pos = safe
                    break
                if i > pos:
                    events.append(Data(pos, i))
                pos, self._state = i + len(self._delimiter), _AFTER_DELIMITER
        return events, pos


def _part_start(block: bytes) -> PartStart:
    name = filename = None
    for line in block.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"Malformed multipart part header {line[:80]!r}")
        if key.strip().lower() == "content-disposition":
            kind, params = parse_header(value.strip())
            if kind.lower() != "form-data":
                raise MultipartError(f"A part's Content-Disposition must be form-data, not {kind!r}")
            name, filename = params.get("name"), params.get("filename")
    if not name:
        raise MultipartError("A multipart part has no Content-Disposition name")
    return PartStart(name, filename)
