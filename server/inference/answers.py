"""A generated answer, cut as it streams: thinking, text, and text held back because it may
still turn out to be a tool call. Every family that splits `<think>` or holds back calls
uses this one cutter, so a streamed answer and a whole one come out the same in every API.

Pure: pieces of text in, ("thinking" | "text", piece) segments out, each sent as soon as it
is sure. What may be a call is kept and handed back at the end for `tool_calls.parse`.
"""
from __future__ import annotations

from modelyard.server.inference.tool_calls import CALL_TAG, may_become_call

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

Segment = tuple[str, str]  # ("thinking" | "text", piece)


class ThinkingSplitter:
    """Text pieces in; ("thinking" | "text", piece) segments out, as soon as each is sure.

    A reasoning model writes `<think>...</think>` before its answer (as llama.cpp's server
    reads it with `--reasoning-format`). While the start of the text could still be that
    tag, or the end of the thinking could be the start of the closing one, it is held back.
    White space around the thinking is dropped.
    """

    def __init__(self):
        self.state = "start"  # then "thinking" or "text"
        self.buf = ""
        self.strip_lead = False

    def feed(self, piece: str) -> list[Segment]:
        self.buf += piece
        out: list[Segment] = []
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
                keep = partial_suffix(self.buf, THINK_CLOSE)
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

    def finish(self) -> list[Segment]:
        rest, self.buf = self.buf, ""
        if self.state == "thinking":
            rest = rest.strip()
            return [("thinking", rest)] if rest else []
        return [("text", rest)] if rest else []


class CallHolder:
    """With tools: which of the answer's text can go out now. The start of an answer that
    may be a bare JSON call, and anything from a <tool_call> tag on, is held for the end;
    a forced call (or an answer parsed whole) is all held."""

    def __init__(self, forced: bool = False):
        self.forced = forced
        self.deciding = True  # the answer's start may still be a bare call
        self.held = ""

    def feed(self, text: str) -> str:
        held, self.held = self.held + text, ""
        if self.forced or (self.deciding and may_become_call(held)):
            self.held = held
            return ""
        self.deciding = False
        # A call after some text: the text goes now, the call from its tag on is held.
        at = held.find(CALL_TAG)
        if at < 0:
            at = len(held) - partial_suffix(held, CALL_TAG)
        self.held = held[at:]
        return held[:at]

    def release(self) -> str:
        held, self.held = self.held, ""
        return held


class AnswerCutter:
    """Thinking split off (when asked for), then text through a CallHolder (with tools)."""

    def __init__(self, thinking: bool = False, holds_calls: bool = False, forced: bool = False):
        self.splitter = ThinkingSplitter() if thinking else None
        self.holder = CallHolder(forced) if holds_calls else None

    def feed(self, piece: str) -> list[Segment]:
        if self.splitter is None:
            return self._hold([("text", piece)] if piece else [])
        return self._hold(self.splitter.feed(piece))

    def finish(self) -> tuple[list[Segment], str]:
        """(the last sure segments, the held text that may be calls: parse it)."""
        segments = self._hold(self.splitter.finish()) if self.splitter is not None else []
        return segments, self.holder.release() if self.holder is not None else ""

    def whole(self, text: str) -> tuple[str, str, str]:
        """(thinking, text, held) of a finished answer, cut as a stream of it would be."""
        if self.holder is not None:
            self.holder.forced = True  # the whole text is parsed at the end
        segments = self.feed(text)
        rest, held = self.finish()
        thinking = "".join(t for kind, t in segments + rest if kind == "thinking")
        return thinking, "".join(t for kind, t in segments + rest if kind == "text"), held

    def _hold(self, segments: list[Segment]) -> list[Segment]:
        if self.holder is None:
            return segments
        out = []
        for kind, text in segments:
            if kind == "text":
                text = self.holder.feed(text)
            if text:
                out.append((kind, text))
        return out


def partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a beginning of `tag`."""
    for k in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0
