"""NDJSON lines that a line reader cannot split: the ollama Python client reads streams with
httpx's iter_lines, which splits at U+2028, U+2029 and U+0085 as str.splitlines() does."""
from __future__ import annotations

import json

import httpx

from modelyard.server.http import jsonio


def test_a_token_with_a_unicode_line_break_stays_on_its_line():
    pieces = ["a\u2028b", "c\u2029d", "e\x85f", "plain é ✓"]
    body = b"".join(jsonio.line({"response": p, "done": False}) for p in pieces)
    lines = list(httpx.Response(200, content=body).iter_lines())
    assert [json.loads(x)["response"] for x in lines] == pieces
    # orjson alone leaves them raw, and the same reader would cut those chunks apart
    raw = b"".join(jsonio.dumps({"response": p}) + b"\n" for p in pieces)
    assert len(list(httpx.Response(200, content=raw).iter_lines())) > len(pieces)
