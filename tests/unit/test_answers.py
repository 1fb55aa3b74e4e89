"""The one answer cutter every family streams through (inference/answers.py): thinking split
off, text that may be a tool call held back, and the same cut whether the answer comes in
one piece or token by token."""
from __future__ import annotations

import pytest

from modelyard.server.inference.answers import AnswerCutter
from modelyard.server.inference import tool_calls

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def _streamed(cutter: AnswerCutter, text: str, cut: int):
    segments = []
    for i in range(0, len(text), cut):
        segments += cutter.feed(text[i:i + cut])
    rest, held = cutter.finish()
    segments += rest
    return ("".join(t for k, t in segments if k == "thinking"),
            "".join(t for k, t in segments if k == "text"), held)


@pytest.mark.parametrize("cut", [1, 2, 5, 1000])
@pytest.mark.parametrize("thinking, holds, text, want", [
    (True, False, "  <think>\nFirst, colours.\n</think>\n\nRed, green.", ("First, colours.", "Red, green.", "")),
    (True, False, "<think>unfinished", ("unfinished", "", "")),
    (False, False, "<think>x</think> y", ("", "<think>x</think> y", "")),
    (True, False, "<thin and more", ("", "<thin and more", "")),
    (False, True, "Let me look." + CALL, ("", "Let me look.", CALL)),
    (True, True, "<think>hmm</think>" + CALL, ("hmm", "", CALL)),
    (False, True, "Plain text, no call.", ("", "Plain text, no call.", "")),
    (False, True, '{"not": "a call"} then text', ("", "", '{"not": "a call"} then text')),
])
def test_a_stream_is_cut_as_the_whole_answer_is(cut, thinking, holds, text, want):
    streamed = _streamed(AnswerCutter(thinking, holds), text, cut)
    whole = AnswerCutter(thinking, holds).whole(text)
    assert streamed[:2] == want[:2]
    assert streamed[2] == want[2]
    # parsed at the end, what was held gives the same calls whichever way it came
    if holds:
        def calls(text):
            return [c["function"] for c in tool_calls.parse(text, {"get_weather"})[1]]
        assert calls(streamed[2]) == calls(whole[1] + whole[2])
    assert whole[0] == want[0]


def test_text_goes_out_as_soon_as_it_cannot_be_a_call():
    cutter = AnswerCutter(holds_calls=True)
    assert cutter.feed("  ") == []  # could still open a call
    assert cutter.feed("Hi") == [("text", "  Hi")]
    assert cutter.feed(" there <tool_") == [("text", " there ")]  # a tag may be starting
    assert cutter.feed("call>{") == []
    assert cutter.finish() == ([], "<tool_call>{")


def test_a_forced_call_holds_everything():
    cutter = AnswerCutter(holds_calls=True, forced=True)
    assert cutter.feed("Sure, here") == [] and cutter.feed(" it is") == []
    assert cutter.finish() == ([], "Sure, here it is")
