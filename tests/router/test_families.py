"""What the router says itself in each API's words comes from the families' declarations:
the keep-alive of a held stream and the event that ends a broken one."""
from __future__ import annotations

import json

import pytest

from modelyard.server.router.families import Voices, held_stream, stream_error
from modelyard.server.router.locate import Locator

LOCATOR = Locator()
VOICES = Voices()


def _held(path: str, body) -> tuple[str, bytes] | None:
    located = LOCATOR.find(path)
    return held_stream(located.family, located.declared, body)


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/v1/chat/completions", {"stream": True}, ("text/event-stream", b": ping\n\n")),
    ("/mimik-ai/openai/v1/completions", {"stream": True}, ("text/event-stream", b": ping\n\n")),
    ("/v1/chat/completions", {"stream": False}, None),
    ("/v1/chat/completions", {}, None),
    ("/v1/embeddings", {"stream": True}, None),  # not a streaming route
    ("/v1/messages", {"stream": True}, ("text/event-stream", b'event: ping\ndata: {"type":"ping"}\n\n')),
    ("/api/engine/chat", {"model_id": "m"}, ("text/event-stream", b": ping\n\n")),  # always a stream
    ("/api/chat", {"model": "m"}, None),  # NDJSON: no keep-alive line exists
    ("/api/generate", {"model": "m", "stream": False}, None),
])
def test_the_keep_alive_of_a_held_stream(path, body, expected):
    assert _held(path, body) == expected


def _broken(path: str, content_type: str) -> bytes | None:
    located = LOCATOR.find(path)
    body = VOICES.error_dict(path, located.template, 502, "gone")
    return stream_error(located.family, body, content_type, 502, "gone")


def test_the_event_that_ends_a_broken_stream_is_each_apis():
    openai = _broken("/v1/chat/completions", "text/event-stream; charset=utf-8")
    assert openai.startswith(b"data: ") and json.loads(openai[6:])["error"]["message"] == "gone"
    claude = _broken("/v1/messages", "text/event-stream")
    assert claude.startswith(b"event: error\n")
    assert json.loads(claude.split(b"data: ", 1)[1]) == {"type": "error", "error": {
        "type": "api_error", "message": "gone"}}
    silicon = _broken("/api/engine/chat", "text/event-stream")
    assert json.loads(silicon[6:]) == {"error": "gone", "done": True}
    assert json.loads(_broken("/api/chat", "application/x-ndjson")) == {"error": "gone"}
    assert _broken("/v1/chat/completions", "application/json") is None  # not a stream: it ends short


def test_the_router_names_no_family():
    """Issue 21's rule: what a family says lives in its folder; the router loops over the
    declarations and neither names a family nor imports from a family's folder."""
    import pkgutil
    from pathlib import Path

    import modelyard.server.api as api
    import modelyard.server.router as router
    from modelyard.server.api.families import API_FAMILIES

    folders = [m.name for m in pkgutil.iter_modules(api.__path__) if m.ispkg]
    assert "openai" in folders
    for source in Path(router.__file__).parent.glob("*.py"):
        text = source.read_text()
        for family in API_FAMILIES:
            assert f'"{family.name}"' not in text, (source.name, family.name)
        for folder in folders:
            assert f"modelyard.server.api.{folder}" not in text, (source.name, folder)
