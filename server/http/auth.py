"""API-key auth: which routes need the key, where a request carries it, and a
constant-time comparison."""
from __future__ import annotations

import hmac

import falcon

from modelyard.server.http.errors import ApiError

# Route families that need the key for every method (the mimOE OpenAI API: "All endpoints require
# authentication"). The registry needs it only for mutations (the mModelStore API).
_ALWAYS = ("/v1/", "/mimik-ai/openai/v1/", "/v2/", "/api/")
_REGISTRY = ("/store/v1/", "/mimik-ai/store/v1/")
_READS = ("GET", "HEAD", "OPTIONS")


def needs_key(method: str, path: str) -> bool:
    if path.startswith(_ALWAYS) or path + "/" in _ALWAYS:
        return True
    if path.startswith(_REGISTRY):
        return method not in _READS
    return False


def key_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def given_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>`, or else `x-api-key: <key>`
    (Anthropic's clients send that one)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return (x_api_key or "").strip() or None


class AuthMiddleware:
    """Checks the key when one is configured."""

    def __init__(self, api_key: str | None):
        self.api_key = api_key

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.api_key or not needs_key(req.method, req.path):
            return
        token = given_key(req.get_header("Authorization"), req.get_header("x-api-key"))
        if token is None:
            raise ApiError(
                401,
                "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not key_matches(token, self.api_key):
            raise ApiError(403, "Invalid API key")
