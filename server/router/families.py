"""What the router says itself, in each API's own words: error bodies (each family's declared
shape), the keep-alive event of a held stream, and the error event that ends a stream that
broke half-way. The pods' own encoders are reused, so the router speaks as a pod does."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from modelyard.server.api.anthropic import format as anthropic
from modelyard.server.api.families import route_rules
from modelyard.server.api.family import NDJSON, SSE
from modelyard.server.http import sse
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


def held_stream(family: str, template: str, body: Any) -> bytes | None:
    """The keep-alive event of a request answered as a stream in an API that has one
    (OpenAI's and Silicon's SSE comment, Anthropic's ping event); None otherwise (Ollama's
    NDJSON has none, and a plain JSON answer cannot start before its status is known)."""
    if family == "silicon" and template.endswith("/chat"):
        return sse.PING
    if not (isinstance(body, dict) and body.get("stream") is True):
        return None
    return {"anthropic": anthropic.PING, "openai": sse.PING}.get(family)


def stream_error(family: str, error_body: dict, content_type: str, code: int, message: str) -> bytes | None:
    """The event that ends a stream which broke half-way, in its API's shape; None for a body
    that is not a stream (it just ends short, and the client sees a truncated body)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == SSE:
        if family == "anthropic":
            return anthropic.error_event(code, message)
        if family == "silicon":
            return sse.frame({"error": message, "done": True})
        return sse.frame(error_body)
    if kind == NDJSON:
        return dumps({"error": message}) + b"\n"
    return None
