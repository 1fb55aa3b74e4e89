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
from modelyard.server.inference.answers import AnswerCutter


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


class Shaper:
    """Cuts one answer into content blocks, as stream events or as a whole message.

    `parse(text) -> (content, calls)` finds tool calls (None: tools are off). The answer is
    cut by inference/answers.py (thinking, text, and text held back because it may be a
    call), and what was held is sent as tool_use blocks or as text at the end.
    """

    def __init__(self, model: str, thinking: bool, parse: Callable | None = None, forced: bool = False):
        self.mid, self.model = new_id("msg"), model
        self.cutter = AnswerCutter(thinking, holds_calls=parse is not None, forced=forced)
        self.parse = parse
        self.index = -1
        self.open: str | None = None  # the type of the block being sent
        self.blocks: list[dict] = []  # the whole message's content

    # ---- the stream ------------------------------------------------------------------

    def start(self, input_tokens: int) -> list[bytes]:
        head = message(self.mid, self.model, [], None, None, usage(input_tokens, 0))
        # ping at once: the client knows the request was taken while the prompt is processed
        return [sse("message_start", {"type": "message_start", "message": head}), PING]

    def feed(self, piece: str) -> list[bytes]:
        return [ev for kind, text in self.cutter.feed(piece) for ev in self._delta(kind, text)]

    def finish(self, finish_reason: str | None, matched_stop: str | None, output_tokens: int) -> list[bytes]:
        segments, held = self.cutter.finish()
        out = [ev for kind, text in segments for ev in self._delta(kind, text)]
        calls: list[dict] = []
        if held:
            content, calls = self.parse(held)
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
        if self.cutter.holder is not None:
            self.cutter.holder.forced = True  # the whole text is parsed at the end
        self.feed(text)
        self.finish(finish_reason, matched_stop, output_tokens)
        return message(self.mid, self.model, self.blocks, self.reason, self.sequence,
                       usage(input_tokens, output_tokens))

    # ---- blocks ----------------------------------------------------------------------

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
