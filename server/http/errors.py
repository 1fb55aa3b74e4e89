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
# Silicon Studio's engine is a FastAPI app, whose errors are {"detail": "..."}: its routes
# answer both keys, so the app's client and the /api/ routes' readers each find theirs.
SILICON_PREFIX = "/api/engine/"
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


# Mullama's error types by status, and the `code` string each status gets by default.
_MULLAMA_TYPES = {
    400: ("invalid_request", "invalid_request"),
    401: ("invalid_request", "unauthorized"),
    403: ("invalid_request", "forbidden"),
    404: ("not_found", "not_found"),
    405: ("invalid_request", "method_not_allowed"),
    409: ("conflict", "conflict"),
    413: ("invalid_request", "payload_too_large"),
    429: ("overloaded", "too_many_requests"),
    500: ("internal_error", "internal_error"),
    502: ("model_error", "upstream_error"),
    503: ("overloaded", "unavailable"),
}
# The routes only Mullama's daemon has (the three it shares with Ollama answer Ollama's shape).
MULLAMA_PATHS = ("/api/models", "/api/system/status", "/api/defaults", "/health", "/status")


def is_mullama(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in MULLAMA_PATHS)


def mullama_error(code: int, message: str, type_: str | None = None, error_code: str | None = None) -> dict:
    default_type, default_code = _MULLAMA_TYPES.get(code, ("internal_error" if code >= 500 else "invalid_request",
                                                           "internal_error" if code >= 500 else "invalid_request"))
    if code == 404 and message.startswith("Model "):
        default_code = "model_not_found"
    return {"error": {"message": message, "type": type_ or default_type, "code": error_code or default_code}}


def anthropic_error_type(code: int) -> str:
    return _ANTHROPIC_TYPES.get(code, "api_error" if code >= 500 else "invalid_request_error")


def is_anthropic(path: str) -> bool:
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


class ApiError(falcon.HTTPError):
    """An error with a message meant for the person who sent the request. `kind` is the
    error's type where a family names types itself (Mullama's model_error for a load that
    failed, where the status alone says internal_error)."""

    def __init__(self, status: int, message: str, headers: dict | None = None, kind: str | None = None):
        super().__init__(falcon.code_to_http_status(status), description=message, headers=headers)
        self.message = message
        self.kind = kind


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(model_id: str) -> ApiError:
    return ApiError(404, f"Model '{model_id}' not found")


def error_body(path: str, code: int, message: str, kind: str | None = None) -> dict:
    """The JSON body for an error on `path`."""
    if is_mullama(path):
        return mullama_error(code, message, kind)
    if is_anthropic(path):
        return {"type": "error", "error": {"type": anthropic_error_type(code), "message": message}}
    if path.startswith(SILICON_PREFIX):
        return {"error": message, "detail": message}
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
    resp.media = error_body(req.path, code, message, getattr(exc, "kind", None))


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """Anything not raised on purpose is a 500 in the same shape, logged with its traceback."""
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(req.path, 500, f"Internal server error: {type(exc).__name__}")
