"""What the router says itself, in each API's own words: error bodies (each family's declared
shape), the keep-alive event of a held stream, and the error event that ends a stream that
broke half-way. All three are the families' own declarations (api/<family>/family.py), so the
router speaks as a pod does and names no family."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from modelyard.server.api.families import route_rules
from modelyard.server.api.family import Family, Route
from modelyard.server.http.jsonio import dumps
from modelyard.server.http.routes import RouteRules


class Voices:
    """Error bodies by the families' declared shapes (the server's own route rules)."""

    def __init__(self, rules: RouteRules | None = None) -> None:
        self.rules = rules or route_rules()

    def error_dict(self, path: str, template: str | None, code: int, message: str) -> dict:
        """In the shape of the route (or of the family whose prefix `path` is under)."""
        rule = self.rules.for_request(SimpleNamespace(uri_template=template, path=path))
        return rule.error_body(code, message, None)

    def error(self, path: str, template: str | None, code: int, message: str) -> bytes:
        return dumps(self.error_dict(path, template, code, message))


def held_stream(family: Family, route: Route, body: Any) -> tuple[str, bytes] | None:
    """(content type, keep-alive event) of a request answered as a stream in a family that
    has a keep-alive for it (OpenAI's and Silicon's SSE comment, Anthropic's ping event); None
    otherwise (Ollama's NDJSON has none, and a plain JSON answer cannot start before its
    status is known)."""
    streams = route.streams
    if streams is None or not streams.asked(body):
        return None
    ping = family.keepalives.get(streams.content_type)
    return (streams.content_type, ping) if ping is not None else None


def stream_error(family: Family, error_body: dict, content_type: str, code: int, message: str) -> bytes | None:
    """The event that ends a stream which broke half-way, in its API's shape; None for a body
    that is not a stream (it just ends short, and the client sees a truncated body)."""
    encode = family.stream_errors.get(content_type.split(";")[0].strip().lower())
    return encode(error_body, code, message) if encode is not None else None
