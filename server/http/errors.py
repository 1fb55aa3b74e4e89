"""Errors in each API family's shape; {"error": {"code": N, "message": "..."}} by default.

Every failure the server reports goes through `ApiError` or Falcon's own HTTPError, and
one serializer turns it into the right body for the route family: the mModelStore API's
shape everywhere, plus OpenAI's `type` under /v1, the KServe OIP's `{"error": "..."}`
under /v2, and Anthropic's `{"type": "error", "error": {"type", "message"}}` under /v1/messages.
"""
from __future__ import annotations

import logging

import falcon

log = logging.getLogger(__name__)

OPENAI_PREFIXES = ("/v1/", "/mimik-ai/openai/v1/")
KSERVE_PREFIX = "/v2/"
OLLAMA_PREFIX = "/api/"  # Ollama's {"error": "..."}
ANTHROPIC_PATH = "/v1/messages"  # and below it (count_tokens)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}

# Anthropic's error types by status (its SDKs pick their exception classes by status).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_type(code: int) -> str:
    return _ANTHROPIC_TYPES.get(code, "api_error" if code >= 500 else "invalid_request_error")


def is_anthropic(path: str) -> bool:
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


class ApiError(falcon.HTTPError):
    """An error with a message meant for the person who sent the request."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(falcon.code_to_http_status(status), description=message, headers=headers)
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(model_id: str) -> ApiError:
    return ApiError(404, f"Model '{model_id}' not found")


def error_body(path: str, code: int, message: str) -> dict:
    """The JSON body for an error on `path`."""
    if is_anthropic(path):
        return {"type": "error", "error": {"type": anthropic_error_type(code), "message": message}}
    if path.startswith(KSERVE_PREFIX) or path.startswith(OLLAMA_PREFIX):
        return {"error": message}
    body = {"code": code, "message": message}
    if path.startswith(OPENAI_PREFIXES):
        body["type"] = _OPENAI_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return {"error": body}


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    code = exc.status_code
    message = getattr(exc, "message", None) or exc.description or exc.title or "Error"
    if code == 404 and not isinstance(exc, ApiError):
        message = f"No route for {req.method} {req.path}"
    if code == 405:
        message = f"Method {req.method} is not allowed on {req.path}"
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(req.path, code, message)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """Anything not raised on purpose is a 500 in the same shape, logged with its traceback."""
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(req.path, 500, f"Internal server error: {type(exc).__name__}")
