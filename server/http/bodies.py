"""Reading request bodies: size limits (413), JSON that must be an object (400), and
validation against the body's declared pydantic model (400 naming the field)."""
from __future__ import annotations

import json
from typing import TypeVar

import falcon
import pydantic

from modelyard.server.http.errors import ApiError, bad_request

M = TypeVar("M", bound=pydantic.BaseModel)


def read_json_object(req: falcon.Request, max_size: int) -> dict:
    """The body as a JSON object, or a 4xx that says what is wrong with it."""
    if req.content_length is not None and req.content_length > max_size:
        raise too_large(req.content_length, max_size)
    # A chunked body (no Content-Length) is read from the stream to its end, where the
    # server ends it (gunicorn does, and says so in wsgi.input_terminated).
    chunked = req.content_length is None and req.env.get("wsgi.input_terminated")
    raw = (req.stream if chunked else req.bounded_stream).read(max_size + 1)
    if len(raw) > max_size:
        raise too_large(None, max_size)
    if not raw.strip():
        raise bad_request("Request body is empty: send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"Malformed JSON in request body: {exc}") from None
    except RecursionError:
        raise bad_request("Malformed JSON in request body: nested too deeply") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


def read_model(req: falcon.Request, model: type[M], max_size: int) -> M:
    """The body as an instance of its declared model, or a 4xx that names the field."""
    return validate(model, read_json_object(req, max_size))


def validate(model: type[M], data: dict) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise bad_request(describe(exc)) from None
    except RecursionError:  # a value nested deeper than validation recurses
        raise bad_request("Request body is nested too deeply") from None


def describe(exc: pydantic.ValidationError) -> str:
    """The first problem of a body, in words that name the field (messages[0].role)."""
    err = exc.errors(include_url=False)[0]
    where = field_path(err["loc"])
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"Missing required field '{where}'"
    if kind == "extra_forbidden":
        return f"Unknown field '{where}'"
    if not where:
        return msg
    return f"Field '{where}': {msg}"


def field_path(loc: tuple) -> str:
    """("messages", 0, "role") -> "messages[0].role"; union branch names left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and not _is_branch(part):
            out += f".{part}" if out else part
    return out


def _is_branch(part: str) -> bool:
    # pydantic names the member of a union it tried: 'str', 'list[int]', 'function-after[...]'
    return part in ("str", "int", "float", "bool", "dict", "list", "none") or "[" in part or part[:1].isupper()


def too_large(size: int | None, max_size: int) -> ApiError:
    got = f"{size} bytes" if size is not None else "more than that"
    return ApiError(413, f"Request body too large: the limit is {max_size} bytes, got {got}")


# How much of a chunked body past --max-upload-size is read and dropped before the 413.
LINGER = 16 << 20


class RawBody:
    """A request body read into the caller's buffers with `readinto`, to its end: of known
    length (Content-Length), or chunked (Transfer-Encoding: chunked, no Content-Length; Go's
    net/http sends any io.Reader of unknown length so, and `ollama create` streams a blob
    that way). `limit` bounds either: a Content-Length over it is a 413 before anything is
    read, and a chunked body is a 413 at the byte that passes it.

    Under gunicorn the bytes of a body of known length come straight off the client socket
    with recv_into(), past gunicorn's body reader, which copies every byte twice through
    BytesIO and held an upload to about 750 MB/s. Gunicorn's reader is kept told how much
    of the body is still on the socket, so whatever is left unread (an upload refused
    half-way) is drained by gunicorn as usual before the next request on the connection.
    A chunked body, and any body under another WSGI server, is read from the input stream
    and copied in (gunicorn decodes the chunks and ends the stream at the last one).
    """

    def __init__(self, env: dict, length: int | None, limit: int | None = None):
        if length is None and not env.get("wsgi.input_terminated"):
            # A server that does not end the input stream at the body's end (PEP 3333 does
            # not ask it to) would leave a read to the end waiting on the socket.
            raise ApiError(411, "Send the body with a Content-Length header")
        if length is not None and limit is not None and length > limit:
            raise too_large(length, limit)
        self.remaining = length  # None when chunked: the body ends where its last chunk does
        self.limit = limit
        self.received = 0
        self._pending = b""
        self._sock = None
        self._stream = env["wsgi.input"]
        reader = getattr(self._stream, "reader", None)
        unreader = getattr(reader, "unreader", None)
        buffered = getattr(self._stream, "buf", None)
        if (length is not None and env.get("gunicorn.socket") is not None
                and hasattr(unreader, "take_buffered")
                and getattr(reader, "length", None) == length
                and buffered is not None and buffered.tell() == 0):
            self._sock, self._reader = env["gunicorn.socket"], reader
            # What gunicorn read ahead with the headers is the start of the body.
            pending = unreader.take_buffered()
            if len(pending) > length:  # a pipelined next request: give it back
                unreader.unread(pending[length:])
                pending = pending[:length]
            self._pending = pending
            reader.length = length - len(pending)

    def readinto(self, view: memoryview) -> int:
        """Fill the start of `view`; 0 once the body is read or the client went away.
        Raises a 413 ApiError when a chunked body passes the limit, a 400 when its chunks
        are malformed or cut off."""
        if self.remaining is None:
            return self._read_chunked(view)
        if self.remaining <= 0:
            return 0
        view = view[:self.remaining]
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
        elif self._sock is not None:
            try:
                n = self._sock.recv_into(view)
            except OSError:
                self._stream.failed = True  # tells gunicorn to close, not to drain
                raise
            self._reader.length -= n
        else:
            n = self._copy_in(view)
        self.remaining -= n
        self.received += n
        return n

    def _read_chunked(self, view: memoryview) -> int:
        if self.limit is not None:
            view = view[:self.limit + 1 - self.received]  # one byte past the limit tells
        try:
            n = self._copy_in(view)
        except Exception as exc:  # gunicorn's NoMoreData, InvalidChunkSize, ChunkMissingTerminator...
            raise bad_request(f"The chunked request body is malformed or cut off: "
                              f"{type(exc).__name__}") from None
        self.received += n
        if self.limit is not None and self.received > self.limit:
            self._discard(view)
            raise too_large(None, self.limit)
        return n

    def _discard(self, scratch: memoryview) -> None:
        """Read on past the limit, keeping nothing, up to LINGER bytes. A client that is
        still sending (Go's net/http writes the body while it waits for the answer) then
        reads the 413 instead of a connection reset mid-write: gunicorn drains only 64 KiB
        of a body left unread before it closes."""
        left = LINGER
        try:
            while left > 0 and (n := self._copy_in(scratch[:left])):
                left -= n
        except Exception:  # cut off or malformed past the limit: the 413 stands
            pass

    def _copy_in(self, view: memoryview) -> int:
        data = self._stream.read(len(view))
        view[:len(data)] = data
        return len(data)
