"""Server-Sent Events responses, shared by the download route and the OpenAI streams."""
from __future__ import annotations

from typing import Iterable

import falcon


def stream_events(resp: falcon.Response, events: Iterable[bytes]) -> None:
    """Send `events` (already framed as `data: ...\\n\\n`) as they are produced.

    Under gunicorn's gthread worker each chunk is written as it comes, and the
    iterator's close() runs when the response ends or the client goes away.
    """
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
    resp.stream = events
