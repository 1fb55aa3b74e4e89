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
    raw = req.bounded_stream.read(max_size + 1)
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


class RawBody:
    """A request body of known length, read into the caller's buffers with `readinto`.

    Under gunicorn the bytes come straight off the client socket with recv_into(),
    past gunicorn's body reader, which copies every byte twice through BytesIO and held
    an upload to about 750 MB/s. Gunicorn's reader is kept told how much of the body
    is still on the socket, so whatever is left unread (an upload refused half-way) is
    drained by gunicorn as usual before the next request on the connection. Under
    any other WSGI server the input stream is read and copied in.
    """

    def __init__(self, env: dict, length: int):
        self.remaining = length
        self._pending = b""
        self._sock = None
        self._stream = env["wsgi.input"]
        reader = getattr(self._stream, "reader", None)
        unreader = getattr(reader, "unreader", None)
        buffered = getattr(self._stream, "buf", None)
        if (env.get("gunicorn.socket") is not None and hasattr(unreader, "take_buffered")
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
        """Fill the start of `view`; 0 once the body is read or the client went away."""
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
            data = self._stream.read(len(view))
            n = len(data)
            view[:n] = data
        self.remaining -= n
        return n
