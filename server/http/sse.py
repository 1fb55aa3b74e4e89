"""Server-Sent Events: the one framer of every stream's events, and the response headers."""
from __future__ import annotations

from typing import Iterable

import falcon

from modelyard.server.http.jsonio import dumps

# A comment line: clients ignore it; it keeps proxies from timing out and makes a write.
PING = b": ping\n\n"


def frame(data, event: str | None = None) -> bytes:
    """One event: `data: <json>`, after an `event: <name>` line where the API names its
    events (Anthropic's clients dispatch on it)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + dumps(data) + b"\n\n"


def stream_events(resp: falcon.Response, events: Iterable[bytes]) -> None:
    """Send `events` (already framed) as they are produced.

    Under gunicorn's gthread worker each chunk is written as it comes, and the
    iterator's close() runs when the response ends or the client goes away.
    """
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
    resp.stream = events
