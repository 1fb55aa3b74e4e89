"""The Anthropic Messages API through the official `anthropic` SDK, unchanged, against a real
gunicorn; raw SSE and headers with httpx where the SDK hides them.

The SDK's messages.create has no `temperature` argument in its current release: greedy
requests pass it in extra_body.
"""
from __future__ import annotations

import base64
import json

import anthropic
import httpx
import pytest

from conftest import AUTH, KEY
from modelyard.server.api.anthropic import format as fmt
from modelyard.server.api.anthropic import schema
from modelyard.server.inference import tool_calls
from test_vision import N_IMAGE, RED

GREEDY = {"temperature": 0}
SYSTEM = "You are terse."
USER = [{"role": "user", "content": "Name three colours."}]
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "additionalProperties": False, "required": ["city"],
                            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}}}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "additionalProperties": False, "required": ["tz"],
                                             "properties": {"tz": {"type": "string", "enum": ["UTC"]}}}}
ASK_WEATHER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def ac(server):
    # This SDK release sends its api_key as `Authorization: Bearer`; earlier ones, and other
    # Anthropic clients, send `x-api-key` (test_x_api_key_auth).
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def create(ac, **kw):
    kw.setdefault("model", "chat")
    kw.setdefault("max_tokens", 16)
    kw.setdefault("messages", USER)
    return ac.messages.create(**kw, extra_body=GREEDY)


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event, data) pairs of a raw SSE response, in order."""
    out, event = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
            event = None
    return out


# ---- messages.create ------------------------------------------------------------------

def test_greedy_text_equals_chat_completions(ac, client):
    ours = create(ac, system=SYSTEM)
    ref = client.chat.completions.create(model="chat", messages=[{"role": "system", "content": SYSTEM}, *USER],
                                         temperature=0, max_tokens=16)
    assert ours.type == "message" and ours.role == "assistant" and ours.model == "chat"
    assert ours.id.startswith("msg_")
    assert text_of(ours) == ref.choices[0].message.content
    assert ours.usage.input_tokens == ref.usage.prompt_tokens
    assert ours.usage.output_tokens == ref.usage.completion_tokens
    expected = {"length": "max_tokens", "stop": "end_turn"}[ref.choices[0].finish_reason]
    assert ours.stop_reason == expected and ours.stop_sequence is None


def test_system_as_string_or_blocks_is_the_same_prompt(ac):
    # (the chat template puts a default system prompt of its own in, when none is sent)
    system = "You are terse: you answer every question in one word, and never explain."
    plain = create(ac)
    as_string = create(ac, system=system)
    as_blocks = create(ac, system=[{"type": "text", "text": system}])
    assert as_string.usage.input_tokens > plain.usage.input_tokens + 5  # the system prompt is in
    assert as_blocks.usage.input_tokens == as_string.usage.input_tokens
    assert text_of(as_blocks) == text_of(as_string)


def test_a_system_turn_among_the_messages_stands_where_it_is_sent(server, client):
    """Claude Code's first request of a run sends [user, system] (the system turn after the
    user's): accepted, and rendered into the chat template where it stands, as the OpenAI
    route renders the same turns."""
    note = "The user's editor is Vim; answer in one line."
    claude_code = {"model": "chat", "max_tokens": 8, "temperature": 0, "system": [{"type": "text", "text": SYSTEM}],
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Name three colours."}]},
                                {"role": "system", "content": note}]}
    r = httpx.post(server.url + "/v1/messages", headers={"x-api-key": KEY}, json=claude_code, timeout=120)
    assert r.status_code == 200, r.text  # was 400 "messages[1].role"
    ref = client.chat.completions.create(model="chat", temperature=0, max_tokens=8, messages=[
        {"role": "system", "content": SYSTEM}, *USER, {"role": "system", "content": note}])
    assert r.json()["usage"]["input_tokens"] == ref.usage.prompt_tokens
    assert r.json()["content"][0]["text"] == ref.choices[0].message.content
    # as text blocks too; the turns keep their order
    blocks = {**claude_code, "messages": [claude_code["messages"][0],
                                          {"role": "system", "content": [{"type": "text", "text": note}]}]}
    count = httpx.post(server.url + "/v1/messages/count_tokens", headers={"x-api-key": KEY}, json=blocks)
    assert count.json()["input_tokens"] == ref.usage.prompt_tokens
    turns, _ = schema.conversation(None, schema.MessagesBody.model_validate(blocks).messages)
    assert turns == [{"role": "user", "content": "Name three colours."}, {"role": "system", "content": note}]
    bad = {**claude_code, "messages": [claude_code["messages"][0], {"role": "system", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}]}]}
    r = httpx.post(server.url + "/v1/messages", headers={"x-api-key": KEY}, json=bad)
    assert "system message holds text blocks only" in _anthropic_error(r, 400, "invalid_request_error")


def test_max_tokens_cuts_the_answer(ac):
    r = create(ac, max_tokens=2)
    assert r.usage.output_tokens <= 2
    if r.usage.output_tokens == 2:
        assert r.stop_reason == "max_tokens"


def test_max_tokens_beyond_the_context_is_fitted_not_refused(ac):
    # Anthropic clients always send max_tokens, often far more than a local context holds.
    r = create(ac, max_tokens=100_000)
    assert r.stop_reason in ("end_turn", "max_tokens") and r.usage.input_tokens + r.usage.output_tokens <= 512


def test_stop_sequences_end_the_answer_and_are_named(ac):
    long = create(ac, max_tokens=24)
    text = text_of(long)
    assert len(text) > 6, "the model's greedy answer is too short to cut"
    # a piece from the middle of the answer: the answer must stop just before it
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = create(ac, max_tokens=24, stop_sequences=["never-in-this-answer", stop])
    assert cut.stop_reason == "stop_sequence"
    assert cut.stop_sequence == stop
    assert text_of(cut) == text[:text.index(stop)]
    assert cut.usage.output_tokens < long.usage.output_tokens


def test_images_for_a_vlm(ac):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(RED).decode()}}
    question = {"type": "text", "text": "What is in this picture?"}
    with_image = create(ac, model="vlm", max_tokens=4, messages=[{"role": "user", "content": [question, image]}])
    without = create(ac, model="vlm", max_tokens=4, messages=[{"role": "user", "content": [question]}])
    # the image fills its positions in the prompt: the real vision encoder ran
    assert with_image.usage.input_tokens == without.usage.input_tokens + N_IMAGE
    assert with_image.usage.output_tokens >= 1
    counted = ac.messages.count_tokens(model="vlm", messages=[{"role": "user", "content": [question, image]}])
    assert counted.input_tokens == with_image.usage.input_tokens
    # an image for a text model is refused, and so is one by URL
    with pytest.raises(anthropic.BadRequestError) as e:
        create(ac, messages=[{"role": "user", "content": [question, image]}])
    assert "takes no images" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        create(ac, model="vlm", messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])
    assert "base64" in e.value.body["error"]["message"]


# ---- streaming ------------------------------------------------------------------------

def test_stream_helpers_give_the_same_answer(ac):
    whole = create(ac, system=SYSTEM, max_tokens=20)
    with ac.messages.stream(model="chat", max_tokens=20, system=SYSTEM, messages=USER, extra_body=GREEDY) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == text_of(final) == text_of(whole)
    assert len(pieces) >= 2 or whole.usage.output_tokens < 2  # sent as it came, not at the end
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


def test_raw_sse_event_order(server, ac):
    body = {"model": "chat", "max_tokens": 6, "messages": USER, "stream": True, **GREEDY}
    with httpx.stream("POST", server.url + "/v1/messages", json=body, timeout=120,
                      headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    names = [e for e, _ in events]
    assert all(data["type"] == name for name, data in events)  # each event line names its data
    assert names[0] == "message_start" and names[1] == "ping"  # ping while the prompt is processed
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [d for e, d in events if e == "content_block_delta"]
    assert names.index("ping") < names.index("content_block_start") < names.index("content_block_delta")
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    end = events[-2][1]
    whole = create(ac, max_tokens=6)
    assert end["delta"]["stop_reason"] == whole.stop_reason
    assert end["usage"]["output_tokens"] == whole.usage.output_tokens
    assert "".join(d["delta"]["text"] for d in deltas) == text_of(whole)


def test_a_failed_decode_mid_stream_is_an_error_event(start_server):
    # Decode 1 is the prompt, 2 and 3 give tokens, 4 fails (see test_decode_failure.py).
    server = start_server("--parallel", "2", env={"MODELYARD_TEST_FAIL_DECODE": "4"})
    body = {"model": "chat", "max_tokens": 40, "stream": True, **GREEDY,
            "messages": [{"role": "user", "content": "Go on."}]}
    with httpx.stream("POST", server.url + "/v1/messages", headers=AUTH, json=body, timeout=120) as r:
        assert r.status_code == 200
        events = sse_events(r)
    names = [e for e, _ in events]
    if "message_stop" in names:
        pytest.skip("the model ended its answer before the failing decode")
    assert names[-1] == "error", names
    assert events[-1][1]["error"]["type"] == "overloaded_error"
    assert "llama_decode failed" in events[-1][1]["error"]["message"]
    assert "message_delta" not in names


# ---- tools ----------------------------------------------------------------------------

def test_tool_use_round_trip(ac):
    first = create(ac, max_tokens=80, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                   tool_choice={"type": "tool", "name": "get_weather"})
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input["city"] in ("Paris", "Oslo", "Lima")
    history = ASK_WEATHER + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]}]
    second = create(ac, max_tokens=8, messages=history, tools=[WEATHER, TIME], tool_choice={"type": "none"})
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert all(b.type == "text" for b in second.content)
    # the call and its result went into the prompt: a longer result is a longer prompt
    longer = json.loads(json.dumps(history))
    longer[-1]["content"][0]["content"] = [{"type": "text", "text": "sunny, 21C, and a light wind from the west"}]
    counted = [ac.messages.count_tokens(model="chat", messages=h, tools=[WEATHER, TIME],
                                        tool_choice={"type": "none"}).input_tokens for h in (history, longer)]
    assert counted[0] == second.usage.input_tokens
    assert counted[1] > counted[0]
    without_call = ac.messages.count_tokens(model="chat", messages=ASK_WEATHER, tools=[WEATHER, TIME],
                                            tool_choice={"type": "none"}).input_tokens
    assert counted[0] > without_call + 10


def test_tool_choice_any_streams_a_tool_use_block(ac):
    with ac.messages.stream(model="chat", max_tokens=80, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                            tool_choice={"type": "any"}, extra_body=GREEDY) as s:
        events = list(s)
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert call.type == "tool_use" and call.name in ("get_weather", "get_time")
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    assert json.loads(partial) == call.input
    assert not [e for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    whole = create(ac, max_tokens=80, messages=ASK_WEATHER, tools=[WEATHER, TIME], tool_choice={"type": "any"})
    assert (whole.content[0].name, whole.content[0].input) == (call.name, call.input)


def test_tool_choice_none_leaves_the_tools_out(ac):
    auto = ac.messages.count_tokens(model="chat", messages=ASK_WEATHER, tools=[WEATHER]).input_tokens
    none = ac.messages.count_tokens(model="chat", messages=ASK_WEATHER, tools=[WEATHER],
                                    tool_choice={"type": "none"}).input_tokens
    bare = ac.messages.count_tokens(model="chat", messages=ASK_WEATHER).input_tokens
    assert none == bare < auto


# ---- count_tokens ---------------------------------------------------------------------

def test_count_tokens_is_the_prompt_the_model_sees(ac, client):
    counted = ac.messages.count_tokens(model="chat", system=SYSTEM, messages=USER)
    ref = client.chat.completions.create(model="chat", messages=[{"role": "system", "content": SYSTEM}, *USER],
                                         max_tokens=1)
    assert counted.input_tokens == ref.usage.prompt_tokens
    assert counted.input_tokens == create(ac, system=SYSTEM, max_tokens=1).usage.input_tokens


# ---- errors and auth ------------------------------------------------------------------

def _anthropic_error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    return body["error"]["message"]


def test_sdk_error_classes(ac, server, start_server):
    with pytest.raises(anthropic.BadRequestError) as e:
        create(ac, max_tokens=0)
    assert e.value.status_code == 400 and e.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as e:
        create(ac, model="no-such-model")
    assert e.value.body["error"]["type"] == "not_found_error" and "no-such-model" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0,
                            default_headers={"Authorization": anthropic.Omit()}).messages.create(
            model="chat", max_tokens=4, messages=USER)
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    # A wrong key is a 401 as Anthropic answers it: the SDK raises AuthenticationError.
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0).messages.create(
            model="chat", max_tokens=4, messages=USER)
    assert e.value.status_code == 401 and e.value.body["error"]["type"] == "authentication_error"
    small = start_server("--max-body-size", "4096")
    with pytest.raises(anthropic.ContentTooLargeError) as e:
        anthropic.Anthropic(base_url=small.url, api_key=KEY, max_retries=0).messages.create(
            model="chat", max_tokens=4, messages=[{"role": "user", "content": "x" * 10_000}])
    assert e.value.status_code == 413 and e.value.body["error"]["type"] == "request_too_large"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_bad_bodies_are_4xx_in_anthropics_shape(server, path):
    url, headers = server.url + path, {"x-api-key": KEY}
    r = httpx.post(url, headers={**headers, "Content-Type": "application/json"}, content=b"{not json")
    assert "Malformed JSON" in _anthropic_error(r, 400, "invalid_request_error")
    r = httpx.post(url, headers=headers, json={"model": "chat", "max_tokens": 4, "messages": "hi"})
    assert "messages" in _anthropic_error(r, 400, "invalid_request_error")
    r = httpx.post(url, headers=headers, json={"model": "chat", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "document", "source": {}}]}]})
    assert "'document' blocks are not supported" in _anthropic_error(r, 400, "invalid_request_error")
    r = httpx.post(url, headers=headers, json={"model": "chat", "max_tokens": 4, "messages": USER,
                                               "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}})
    assert "not in 'tools'" in _anthropic_error(r, 400, "invalid_request_error")
    r = httpx.post(url, headers=headers, json={"model": "embed", "max_tokens": 4, "messages": USER})
    assert "kind embed" in _anthropic_error(r, 400, "invalid_request_error")
    r = httpx.post(url, headers=headers, json={"model": "nope", "max_tokens": 4, "messages": USER})
    _anthropic_error(r, 404, "not_found_error")


def test_x_api_key_auth(server):
    # the SDK with x-api-key alone, as Anthropic clients send it
    sdk = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120,
                              default_headers={"Authorization": anthropic.Omit(), "x-api-key": KEY})
    r = sdk.messages.create(model="chat", max_tokens=2, messages=USER)
    assert r.usage.output_tokens >= 1 and r.content[0].type == "text"
    url = server.url + "/v1/messages/count_tokens"
    body = {"model": "chat", "messages": USER}
    assert httpx.post(url, json=body, headers={"x-api-key": KEY}).json()["input_tokens"] > 0
    assert httpx.post(url, json=body, headers=AUTH).status_code == 200  # Bearer works too
    _anthropic_error(httpx.post(url, json=body), 401, "authentication_error")
    _anthropic_error(httpx.post(url, json=body, headers={"x-api-key": "wrong"}), 401, "authentication_error")
    _anthropic_error(httpx.post(url, json=body, headers={"x-api-key": KEY[:-1]}), 401, "authentication_error")
    # other routes keep their own error shape, and take x-api-key as well
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error" and "code" in r.json()["error"]
    assert httpx.get(server.url + "/v1/models", headers={"x-api-key": KEY}).status_code == 200


# ---- the shaping, without a model -----------------------------------------------------

def _replay(events: list[bytes]) -> list[tuple[str, dict]]:
    out = []
    for raw in b"".join(events).decode().split("\n\n"):
        if raw:
            name, data = raw.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


@pytest.mark.parametrize("cut", [1, 2, 3, 7])
def test_thinking_is_split_out_whatever_the_pieces(cut):
    text = "  <think>\nFirst, colours.\n</think>\n\nRed, green, blue."
    shaper = fmt.Shaper("m", thinking=True)
    events = shaper.start(5)
    for i in range(0, len(text), cut):
        events += shaper.feed(text[i:i + cut])
    events += shaper.finish("stop", None, 12)
    got = _replay(events)
    thinking = "".join(d["delta"]["thinking"] for e, d in got if e == "content_block_delta" and d["index"] == 0)
    answer = "".join(d["delta"]["text"] for e, d in got if e == "content_block_delta" and d["index"] == 1)
    assert (thinking, answer) == ("First, colours.", "Red, green, blue.")
    starts = [d["content_block"]["type"] for e, d in got if e == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert {d["delta"]["type"] for e, d in got if e == "content_block_delta" and d["index"] == 0} == {"thinking_delta"}
    whole = fmt.Shaper("m", thinking=True).whole(text, "stop", None, 5, 12)
    assert whole["content"] == [{"type": "thinking", "thinking": "First, colours.", "signature": ""},
                                {"type": "text", "text": "Red, green, blue."}]
    # without thinking asked for, the tags are the answer's text
    plain = fmt.Shaper("m", thinking=False).whole(text, "stop", None, 5, 12)
    assert plain["content"] == [{"type": "text", "text": text}]


def test_text_that_becomes_a_call_is_held_then_sent_as_tool_use():
    parse = lambda t: tool_calls.parse(t, {"get_weather"})  # noqa: E731
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    shaper = fmt.Shaper("m", thinking=False, parse=parse)
    events = shaper.start(5)
    for ch in "Let me look." + call:
        events += shaper.feed(ch)
    events += shaper.finish("stop", None, 30)
    got = _replay(events)
    starts = [d["content_block"] for e, d in got if e == "content_block_start"]
    assert [b["type"] for b in starts] == ["text", "tool_use"]
    assert starts[1]["name"] == "get_weather" and starts[1]["input"] == {}
    text = "".join(d["delta"].get("text", "") for e, d in got if e == "content_block_delta")
    assert text == "Let me look." and "<tool_call>" not in text
    (js,) = [d["delta"]["partial_json"] for e, d in got if e == "content_block_delta" and d["index"] == 1]
    assert json.loads(js) == {"city": "Oslo"}
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use"
    # text that never becomes a call is sent as it comes
    shaper = fmt.Shaper("m", thinking=False, parse=parse)
    assert shaper.feed("Hello") and shaper.feed(" there")
    assert fmt.stop_reason("length", None, False) == ("max_tokens", None)
    assert fmt.stop_reason("stop", "##", False) == ("stop_sequence", "##")
    assert fmt.stop_reason("stop", None, False) == ("end_turn", None)


def test_output_config_json_schema_is_enforced(ac):
    schema = {"type": "object", "required": ["colour"], "additionalProperties": False,
              "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}}}
    r = ac.messages.create(model="chat", max_tokens=60, messages=USER, extra_body={"temperature": 0.7},
                           output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(text_of(r))["colour"] in ("red", "green", "blue")


def test_earlier_thinking_is_left_out_of_the_prompt(ac):
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Red, green, blue."}]}
    thought = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Let me think about colours at length.", "signature": "x"},
        {"type": "text", "text": "Red, green, blue."}]}
    more = {"role": "user", "content": "And two more?"}
    counts = [ac.messages.count_tokens(model="chat", messages=[*USER, a, more]).input_tokens for a in (answer, thought)]
    assert counts[0] == counts[1]
    r = create(ac, max_tokens=4, messages=[*USER, thought, more], thinking={"type": "enabled", "budget_tokens": 1024})
    assert r.usage.input_tokens == counts[0]
    # this model writes no <think>: the answer is all text
    assert [b.type for b in r.content] == ["text"]
