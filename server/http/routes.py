"""What the HTTP layer knows of each route: who may call it, and the shape of its errors.

The API families declare both (api/family.py) and the app hands them down here as a table.
The auth middleware and the error serializer look a request up by the route Falcon matched
(`req.uri_template`), never by the raw path: Falcon's router skips repeated slashes and
decodes `%2F` before it matches, so a prefix test on `req.path` took `//v1/chat/completions`
for an open route while Falcon served the guarded one.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable

import falcon

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Guard(enum.Enum):
    """Who may call a route when the server has a key. Every route declares one."""

    OPEN = "open"      # anyone (liveness, readiness, metrics, the OpenAPI document)
    KEY = "key"        # the key, on every method
    WRITES = "writes"  # the key on methods that change something; reads are open

    def needs_key(self, method: str) -> bool:
        if self is Guard.OPEN:
            return False
        return self is Guard.KEY or method not in READ_METHODS


# (status, message, kind) -> the JSON body of an error, in one API family's shape. `kind`
# is the error's type where the code that raised it knows better than the status
# (errors.BAD_KEY, Mullama's model_error).
ErrorBody = Callable[[int, str, "str | None"], dict]


@dataclass(frozen=True)
class RouteRule:
    guard: Guard
    error_body: ErrorBody
    # A wrong key: 401 where the API's clients expect it (OpenAI's and Anthropic's SDKs raise
    # AuthenticationError on 401), 403 where the API's document says so (mimOE's registry).
    bad_key_status: int = 401


_SLASHES = re.compile(r"/{2,}")


class RouteRules:
    """Rules by URI template, and by path prefix for requests that matched no route (their
    404 or 405 still answers in the family's shape)."""

    def __init__(self, default: RouteRule):
        self.default = default
        self._by_template: dict[str, RouteRule] = {}
        self._by_prefix: list[tuple[str, RouteRule]] = []

    def add(self, template: str, rule: RouteRule) -> None:
        if self._by_template.setdefault(template, rule) is not rule:
            raise ValueError(f"two declarations of the route {template}")
        self.add_prefix(template.split("{", 1)[0].rstrip("/"), rule)

    def add_prefix(self, prefix: str, rule: RouteRule) -> None:
        """Paths below `prefix` that match no route answer errors by `rule` (the longest
        prefix wins: /v1/messages/x is Anthropic's, /v1/x OpenAI's)."""
        if prefix:
            self._by_prefix.append((prefix, rule))
            self._by_prefix.sort(key=lambda pr: len(pr[0]), reverse=True)

    def templates(self) -> set[str]:
        return set(self._by_template)

    def for_template(self, template: str | None) -> RouteRule | None:
        return self._by_template.get(template) if template else None

    def for_request(self, req: falcon.Request) -> RouteRule:
        rule = self.for_template(req.uri_template)
        if rule is not None:
            return rule
        path = _SLASHES.sub("/", req.path)
        for prefix, rule in self._by_prefix:
            if path == prefix or path.startswith(prefix + "/"):
                return rule
        return self.default
