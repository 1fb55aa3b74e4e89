"""Reading request bodies: size limits (413) and JSON that must be an object (400)."""
from __future__ import annotations

import json

import falcon

from .errors import ApiError, bad_request


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
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


def too_large(size: int | None, max_size: int) -> ApiError:
    got = f"{size} bytes" if size is not None else "more than that"
    return ApiError(413, f"Request body too large: the limit is {max_size} bytes, got {got}")
