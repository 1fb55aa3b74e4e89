"""API-key auth, decided from the route Falcon matched and that route's declared guard:
where a request carries the key, and a constant-time comparison."""
from __future__ import annotations

import hmac

import falcon

from modelyard.server.http.errors import BAD_KEY, ApiError
from modelyard.server.http.routes import RouteRules


MISSING_KEY = "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')"
INVALID_KEY = "Invalid API key"


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
    """Checks the key when one is configured, after routing: the matched route's guard
    decides, and a route that declared none needs the key (nothing is open by default)."""

    def __init__(self, api_key: str | None, rules: RouteRules):
        self.api_key = api_key
        self.rules = rules

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        # No resource: no route matched, and Falcon answers 404 without serving anything.
        if not self.api_key or resource is None:
            return
        rule = self.rules.for_template(req.uri_template)
        if rule is not None and not rule.guard.needs_key(req.method):
            return
        token = given_key(req.get_header("Authorization"), req.get_header("x-api-key"))
        if token is None:
            raise ApiError(401, MISSING_KEY, headers={"WWW-Authenticate": "Bearer"})
        if not key_matches(token, self.api_key):
            raise ApiError(rule.bad_key_status if rule else 401, INVALID_KEY, kind=BAD_KEY)
