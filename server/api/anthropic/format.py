"""Anthropic message bodies and stream events, built from plain values. Pure: the route
hands in the generated text piece by piece, and gets back the bytes to send.

One `Shaper` serves both forms of an answer, so a streamed answer and a whole one are
cut into the same blocks: thinking (when asked for, from the model's <think>...</think>),
text, then tool_use blocks parsed from the end of the answer.
"""
from __future__ import annotations

import json
import uuid
from typing import Callable

from modelyard.server.http.sse import frame
from modelyard.server.inference.tool_calls import may_become_call

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_TAG = "<tool_call>"  # tool_calls.py's format


# Anthropic's error types by status (its SDKs pick their exception classes by status).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(code: int) -> str:
    return _ERROR_TYPES.get(code, "api_error" if code >= 500 else "invalid_request_error")


def error_body(code: int, message: str, kind: str | None = None) -> dict:
    """{"type": "error", "error": {"type", "message"}}: Anthropic's shape."""
    return {"type": "error", "error": {"type": error_type(code), "message": message}}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def sse(event: str, data: dict) -> bytes:
    """One Server-Sent Event: Anthropic's clients dispatch on the `event:` line."""
    return frame(data, event)


PING = sse("ping", {"type": "ping"})


def error_event(code: int, message: str) -> bytes:
    return sse("error", error_body(code, message))


def usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def stop_reason(finish_reason: str | None, matched_stop: str | None, called: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of an answer."""
    if called:
        return "tool_use", None
    if finish_reason == "length":
        return "max_tokens", None
    if matched_stop is not None:
        return "stop_sequence", matched_stop
    return "end_turn", None


def tool_use_block(call: dict) -> dict:
    """A parsed call (tool_calls.parse's OpenAI form) as a tool_use block."""
    fn = call["function"]
    return {"type": "tool_use", "id": "toolu_" + call["id"].removeprefix("call_"), "name": fn["name"],
            "input": json.loads(fn["arguments"])}


def message(mid: str, model: str, content: list[dict], reason: str | None, stop_sequence: str | None,
            use: dict) -> dict:
    return {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": stop_sequence, "usage": use}


class ThinkingSplitter:
    """Text pieces in; ("thinking" | "text", piece) segments out, as soon as each is sure.

    A reasoning model writes `<think>...</think>` before its answer. While the start of
    the text could still be that tag, or the end of the thinking could be the start of
    the closing one, it is held back. White space around the thinking is dropped, as
    the Ollama route drops it.
    """

    def __init__(self):
        self.state = "start"  # then "thinking" or "text"
        self.buf = ""
        self.strip_lead = False

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.buf += piece
        out: list[tuple[str, str]] = []
        if self.state == "start":
            head = self.buf.lstrip()
            if head.startswith(THINK_OPEN):
                self.state, self.buf, self.strip_lead = "thinking", head[len(THINK_OPEN):], True
            elif not head or THINK_OPEN.startswith(head):
                return out
            else:
                self.state = "text"
        if self.state == "thinking":
            if self.strip_lead:
                self.buf = self.buf.lstrip()
                self.strip_lead = not self.buf
            end = self.buf.find(THINK_CLOSE)
            if end < 0:
                keep = _partial_suffix(self.buf, THINK_CLOSE)
                sure = self.buf[:len(self.buf) - keep].rstrip()
                if sure:
                    out.append(("thinking", sure))
                    self.buf = self.buf[len(sure):]
                return out
            thought, self.buf = self.buf[:end].rstrip(), self.buf[end + len(THINK_CLOSE):]
            if thought:
                out.append(("thinking", thought))
            self.state, self.strip_lead = "text", True
        if self.state == "text":
            if self.strip_lead:
                self.buf = self.buf.lstrip()
                self.strip_lead = not self.buf
            if self.buf:
                out.append(("text", self.buf))
            self.buf = ""
        return out

    def finish(self) -> list[tuple[str, str]]:
        rest, self.buf = self.buf, ""
        if self.state == "thinking":
            rest = rest.strip()
            return [("thinking", rest)] if rest else []
        return [("text", rest)] if rest else []


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a beginning of `tag`."""
    for k in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


class Shaper:
    """Cuts one answer into content blocks, as stream events or as a whole message.

    `parse(text) -> (content, calls)` finds tool calls (None: tools are off). With tools,
    text that may still turn out to be a call is held back (the start of an answer that
    may be a bare JSON call, and anything from a <tool_call> tag on), and sent as tool_use
    blocks or as text at the end; a forced call is all held.
    """

    def __init__(self, model: str, thinking: bool, parse: Callable | None = None, forced: bool = False):
        self.mid, self.model = new_id("msg"), model
        self.splitter = ThinkingSplitter() if thinking else None
        self.parse, self.forced = parse, forced
        self.deciding = parse is not None
        self.held = ""
        self.index = -1
        self.open: str | None = None  # the type of the block being sent
        self.blocks: list[dict] = []  # the whole message's content

    # ---- the stream ------------------------------------------------------------------

    def start(self, input_tokens: int) -> list[bytes]:
        head = message(self.mid, self.model, [], None, None, usage(input_tokens, 0))
        # ping at once: the client knows the request was taken while the prompt is processed
        return [sse("message_start", {"type": "message_start", "message": head}), PING]

    def feed(self, piece: str) -> list[bytes]:
        segments = self.splitter.feed(piece) if self.splitter else [("text", piece)] if piece else []
        return [ev for kind, text in segments for ev in self._segment(kind, text)]

    def finish(self, finish_reason: str | None, matched_stop: str | None, output_tokens: int) -> list[bytes]:
        out = [ev for kind, text in (self.splitter.finish() if self.splitter else [])
               for ev in self._segment(kind, text)]
        calls: list[dict] = []
        if self.held:
            content, calls = self.parse(self.held)
            self.held = ""
            if content:
                out += self._delta("text", content)
            for call in calls:
                block = tool_use_block(call)
                out += self._open_block("tool_use", {**block, "input": {}})
                out.append(self._event("content_block_delta", delta={
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}))
                self.blocks[-1]["input"] = block["input"]
        if self.index < 0:
            out += self._open_block("text", {"type": "text", "text": ""})
        out += self._close_block()
        reason, sequence = stop_reason(finish_reason, matched_stop, bool(calls))
        self.reason, self.sequence = reason, sequence
        out.append(sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                         "usage": {"output_tokens": output_tokens}}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out

    # ---- the whole message -----------------------------------------------------------

    def whole(self, text: str, finish_reason: str | None, matched_stop: str | None,
              input_tokens: int, output_tokens: int) -> dict:
        """The message of a finished answer: the same blocks a stream of it would have sent."""
        self.forced = self.forced or self.parse is not None  # the whole text is parsed at the end
        self.feed(text)
        self.finish(finish_reason, matched_stop, output_tokens)
        return message(self.mid, self.model, self.blocks, self.reason, self.sequence,
                       usage(input_tokens, output_tokens))

    # ---- blocks ----------------------------------------------------------------------

    def _segment(self, kind: str, text: str) -> list[bytes]:
        if kind == "text" and self.parse is not None:
            text = self._hold(text)
        return self._delta(kind, text) if text else []

    def _hold(self, text: str) -> str:
        """What of the answer's text can be sent now; the rest may be a call, held for the end."""
        held, self.held = self.held + text, ""
        if self.forced or (self.deciding and may_become_call(held)):
            self.held = held
            return ""
        self.deciding = False
        # A call after some text: the text goes now, the call from its tag on is held.
        at = held.find(CALL_TAG)
        if at < 0:
            at = len(held) - _partial_suffix(held, CALL_TAG)
        self.held = held[at:]
        return held[:at]

    def _delta(self, kind: str, text: str) -> list[bytes]:
        out = []
        if self.open != kind:
            out += self._open_block(kind, {"type": kind, kind: "", **({"signature": ""} if kind == "thinking" else {})})
        self.blocks[-1][kind] += text
        out.append(self._event("content_block_delta", delta={"type": f"{kind}_delta", kind: text}))
        return out

    def _open_block(self, kind: str, block: dict) -> list[bytes]:
        out = self._close_block()
        self.index += 1
        self.open = kind
        self.blocks.append(dict(block))
        out.append(self._event("content_block_start", content_block=block))
        return out

    def _close_block(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [self._event("content_block_stop")]

    def _event(self, kind: str, **fields) -> bytes:
        return sse(kind, {"type": kind, "index": self.index, **fields})
