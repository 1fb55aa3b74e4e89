"""Mullama's error shape: {"error": {"message", "type", "code"}}."""
from __future__ import annotations

# Mullama's error types by status, and the `code` string each status gets by default.
_TYPES = {
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

ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "code"],
    "properties": {"message": {"type": "string"}, "code": {"type": "string"}, "type": {
        "enum": ["invalid_request", "not_found", "model_error", "conflict", "internal_error", "overloaded"]}}}}}


def mullama_error(code: int, message: str, type_: str | None = None, error_code: str | None = None) -> dict:
    fallback = "internal_error" if code >= 500 else "invalid_request"
    default_type, default_code = _TYPES.get(code, (fallback, fallback))
    if code == 404 and message.startswith("Model "):
        default_code = "model_not_found"
    return {"error": {"message": message, "type": type_ or default_type, "code": error_code or default_code}}


def error_body(code: int, message: str, kind: str | None = None) -> dict:
    # A kind that is not one of Mullama's types (the auth layer's) leaves the status's type.
    return mullama_error(code, message, kind if kind in {t for t, _ in _TYPES.values()} else None)
