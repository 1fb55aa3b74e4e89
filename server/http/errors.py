"""Errors in each API family's shape.

Every failure the server reports goes through `ApiError` or Falcon's own HTTPError. The
serializer asks the route table (http/routes.py) for the family's error body of the route
the request matched, or of the family whose prefix its path is under; each family declares
its shape in its own folder (api/<family>/family.py).
"""
from __future__ import annotations

import logging

import falcon

from modelyard.server.http.routes import RouteRules

log = logging.getLogger(__name__)

# The `kind` of a request whose key was wrong: families that name error types say so in theirs
# (OpenAI's "invalid_api_key").
BAD_KEY = "invalid_api_key"


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


def default_error_body(code: int, message: str, kind: str | None = None) -> dict:
    """mimOE's shape, the default: {"error": {"code": 404, "message": "Model 'x' not found"}}."""
    return {"error": {"code": code, "message": message}}


class ErrorSerializer:
    """Falcon's error serializer and last-resort handler, in the shape of the request's family."""

    def __init__(self, rules: RouteRules):
        self.rules = rules

    def _write(self, req: falcon.Request, resp: falcon.Response, code: int, message: str,
               kind: str | None = None) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.media = self.rules.for_request(req).error_body(code, message, kind)

    def serialize(self, req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
        code = exc.status_code
        message = getattr(exc, "message", None) or exc.description or exc.title or "Error"
        if code == 404 and not isinstance(exc, ApiError):
            message = f"No route for {req.method} {req.path}"
        if code == 405:
            message = f"Method {req.method} is not allowed on {req.path}"
        self._write(req, resp, code, message, getattr(exc, "kind", None))

    def unexpected(self, req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
        """Anything not raised on purpose is a 500 in the same shape, logged with its traceback."""
        if isinstance(exc, falcon.HTTPError):
            raise exc
        log.exception("unhandled error on %s %s", req.method, req.path)
        resp.status = falcon.HTTP_500
        self._write(req, resp, 500, f"Internal server error: {type(exc).__name__}")
