"""Tools: definitions into the prompt, calls out of the answer, forced by grammar."""
from __future__ import annotations

import json

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}}}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "additionalProperties": False,
                                           "properties": {"tz": {"type": "string", "enum": ["UTC"]}},
                                           "required": ["tz"]}}}]
MSG = [{"role": "user", "content": "Weather in Paris?"}]


def test_forced_function_gives_a_valid_call(client):
    r = client.chat.completions.create(model="chat", messages=MSG, tools=TOOLS, max_tokens=80,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo", "Lima")


def test_required_streams_tool_calls(client):
    chunks = list(client.chat.completions.create(model="chat", messages=MSG, tools=TOOLS, max_tokens=80,
                                                 tool_choice="required", stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time")
    json.loads(calls[0].function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_tool_results_go_back_into_the_prompt(client):
    history = MSG + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}]
    with_tools = client.chat.completions.create(model="chat", messages=history, tools=TOOLS,
                                                max_tokens=3, tool_choice="none")
    plain = client.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    # the call and its result (and no tool list, with tool_choice none) add to the prompt
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 10
    auto = client.chat.completions.create(model="chat", messages=history, tools=TOOLS, max_tokens=3)
    assert auto.usage.prompt_tokens > with_tools.usage.prompt_tokens  # tool definitions rendered


def test_required_tool_calls_stream_per_choice(client):
    kw = dict(model="chat", messages=MSG, tools=TOOLS, max_tokens=80, tool_choice="required", n=2, seed=3)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    calls, finishes, content = {}, {}, {}
    for c in chunks:
        for ch in c.choices:
            calls.setdefault(ch.index, []).extend(ch.delta.tool_calls or [])
            content[ch.index] = content.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes.setdefault(ch.index, []).append(ch.finish_reason)
    assert finishes == {0: ["tool_calls"], 1: ["tool_calls"]}
    assert content == {0: "", 1: ""}  # each choice's call was held back, not leaked as text
    for choice in whole.choices:
        (streamed,) = calls[choice.index]
        (call,) = choice.message.tool_calls
        assert (streamed.function.name, streamed.function.arguments) == (call.function.name, call.function.arguments)
        json.loads(streamed.function.arguments)
