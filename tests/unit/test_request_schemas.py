"""Request validation of the mModelStore API and the OpenAI API: what each body becomes,
and the 400 message for each thing that is wrong. Pure: no server."""
from __future__ import annotations

import base64

import pydantic
import pytest

from modelyard.server.api.openai import schema as oa
from modelyard.server.api.store import schema as store
from modelyard.server.inference.requests import IMAGE_MARKER

# ---- the mModelStore API ------------------------------------------------------------------


def test_create_fields():
    body = store.CreateModel.model_validate({"id": "m", "version": "1", "kind": "llm",
                                             "gguf": {"initContextSize": 4096}})
    assert body.fields() == {"id": "m", "version": "1", "kind": "llm", "gguf": {"initContextSize": 4096}}
    onnx = store.CreateModel.model_validate({"id": "o", "version": "1", "kind": "onnx",
                                             "onnx": {"executionProvider": "cuda"}})
    assert onnx.fields() == {"id": "o", "version": "1", "kind": "onnx", "onnx": {"executionProvider": "cuda"}}
    assert store.CreateModel.model_validate({"id": "e", "version": "1", "kind": "embed"}).fields() == \
        {"id": "e", "version": "1", "kind": "embed"}


@pytest.mark.parametrize("body, words", [
    ({"id": "m", "version": "1", "kind": "onnx", "gguf": {}}, "Field 'gguf' does not apply to kind 'onnx'; use 'onnx'"),
    ({"id": "m", "version": "1", "kind": "llm", "onnx": {}}, "Field 'onnx' does not apply to kind 'llm'; use 'gguf'"),
    ({"id": "m", "version": "1", "kind": "vlm", "onnx": {}}, "Field 'onnx' does not apply to kind 'vlm'; use 'gguf'"),
    ({"id": "a..b", "version": "1", "kind": "llm"}, "invalid model id: it cannot contain '..'"),
    ({"id": ".a", "version": "1", "kind": "llm"}, "invalid model id: it cannot start with '.' or '-'"),
])
def test_create_refusals(body, words):
    with pytest.raises((pydantic.ValidationError, store.SchemaError)) as caught:
        store.CreateModel.model_validate(body)
    assert words in str(caught.value)


def test_sections_for_an_unknown_kind_allow_both():
    sections = store.UpdateModel.model_validate({"id": "m", "action": "update", "gguf": {"initContextSize": 1},
                                                 "onnx": {"executionProvider": "cpu"}})
    assert sections.sections_for(None) == {"gguf": {"initContextSize": 1}, "onnx": {"executionProvider": "cpu"}}


def test_update_changes():
    body = store.UpdateModel.model_validate({"id": "m", "action": "update", "version": "2",
                                             "gguf": {"chatTemplateHint": "chatml"}})
    assert body.changes("llm") == {"gguf": {"chatTemplateHint": "chatml"}, "version": "2"}
    assert store.UpdateModel.model_validate({"id": "m", "action": "update"}).changes("llm") == {}
    with pytest.raises(store.SchemaError, match="Field 'gguf' does not apply to kind 'onnx'"):
        body.changes("onnx")
    onnx = store.UpdateModel.model_validate({"id": "m", "action": "update", "onnx": {}})
    with pytest.raises(store.SchemaError, match="Field 'onnx' does not apply to kind 'embed'; use 'gguf'"):
        onnx.changes("embed")
    assert onnx.changes("onnx") == {"onnx": {}}


@pytest.mark.parametrize("raw, value", [(None, None), ("true", True), ("TRUE", True), ("1", True),
                                        ("false", False), ("False", False), ("0", False)])
def test_parse_bool(raw, value):
    assert store.parse_bool("ready", raw) is value


@pytest.mark.parametrize("raw", ["yes", "", "2", "truth"])
def test_parse_bool_refuses(raw):
    with pytest.raises(store.SchemaError) as caught:
        store.parse_bool("ready", raw)
    assert str(caught.value) == f"Query parameter 'ready' must be true or false, got '{raw}'"


def test_parse_kind():
    assert store.parse_kind(None) is None
    for kind in ("llm", "vlm", "embed", "onnx", "adapter"):
        assert store.parse_kind(kind) == kind
    with pytest.raises(store.SchemaError) as caught:
        store.parse_kind("LLM")
    assert str(caught.value) == ("Query parameter 'kind' has unknown value 'LLM'; "
                                 "use one of: llm, vlm, embed, onnx, adapter")


# ---- the OpenAI API ------------------------------------------------------------------------

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return oa.parse_chat({"model": "m", "messages": MSG, **fields})


def refused(parse, body) -> str:
    with pytest.raises(oa.RequestError) as caught:
        parse(body)
    return str(caught.value)


def test_chat_defaults():
    r = chat()
    s = r.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (1.0, 1.0, 0, 0.0, None)
    assert (s.repeat_penalty, s.presence_penalty, s.frequency_penalty, s.logit_bias) == (1.0, 0.0, 0.0, {})
    assert (r.model, r.stop, r.stream, r.max_tokens, r.include_usage, r.n, r.logprobs) == \
        ("m", [], False, None, False, 1, None)
    assert r.messages == [{"role": "user", "content": "hi"}] and r.images == []
    assert (r.tools, r.tool_choice, r.response_format) == (None, "none", None)


def test_chat_sampling_fields_pass_through():
    r = chat(temperature=0, top_p=0.5, top_k=3, min_p=0.1, seed=7, repeat_penalty=1.3,
             presence_penalty=-1, frequency_penalty=0.5, logit_bias={"12": -100, "-1": 2.5},
             max_tokens=9, stop="END", stream=True, stream_options={"include_usage": True}, n=2)
    s = r.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.seed) == (0, 0.5, 3, 0.1, 7)
    assert (s.repeat_penalty, s.presence_penalty, s.frequency_penalty) == (1.3, -1, 0.5)
    assert s.logit_bias == {12: -100, -1: 2.5}
    assert (r.max_tokens, r.stop, r.stream, r.include_usage, r.n) == (9, ["END"], True, True, 2)
    assert chat(stream_options={"include_usage": False}).include_usage is False


def test_max_completion_tokens_wins_and_empty_stops_go():
    assert chat(max_tokens=5, max_completion_tokens=7).max_tokens == 7
    assert chat(max_tokens=5).max_tokens == 5
    assert chat(stop=["a", "", "b"]).stop == ["a", "b"]


@pytest.mark.parametrize("fields, words", [
    ({"logit_bias": {"x": 1}}, "'logit_bias' must map token ids to numbers"),
    ({"logit_bias": {"1.5": 1}}, "'logit_bias' must map token ids to numbers"),
    ({"top_logprobs": 2}, "'top_logprobs' needs 'logprobs': true"),
    ({"top_logprobs": 2, "logprobs": False}, "'top_logprobs' needs 'logprobs': true"),
    ({"tool_choice": "required"}, "tool_choice 'required' needs 'tools'"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}},
     "tool_choice names function 'f', which is not in 'tools'"),
    ({"messages": [{"role": "user"}]}, "a message needs content"),
    ({"messages": [{"role": "assistant"}]}, "a message needs content"),
    ({"temperature": True}, "temperature"),
])
def test_chat_refusals(fields, words):
    assert words in refused(oa.parse_chat, {"model": "m", "messages": MSG, **fields})


def test_chat_logprobs_tools_and_formats():
    assert chat(logprobs=True).logprobs == 0
    assert chat(logprobs=True, top_logprobs=3).logprobs == 3
    assert chat(logprobs=False).logprobs is None
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = chat(tools=tools)
    assert r.tools == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert r.tool_choice == "auto"
    assert chat(tools=tools, tool_choice="required").tool_choice == "required"
    assert chat(tools=tools, tool_choice="none").tool_choice == "none"
    assert chat(tools=tools, tool_choice={"type": "function", "function": {"name": "f"}}).tool_choice == {"name": "f"}
    assert chat(response_format={"type": "json_object"}).response_format == {"type": "json_object"}


def test_chat_messages_become_the_templates_input():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    r = chat(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": [{"type": "text", "text": "only"}]},
    ])
    assert r.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ab", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "user", "content": "only"},
    ]
    # tool_calls are kept only on assistant messages
    r = chat(messages=[{"role": "user", "content": "x", "tool_calls": calls}])
    assert r.messages == [{"role": "user", "content": "x"}]


def image_part(url):
    return {"type": "image_url", "image_url": url}


def test_image_parts_are_decoded_in_place():
    png = b"\x89PNG fake"
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    r = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "see "}, image_part({"url": uri})]},
                       {"role": "user", "content": [image_part(uri)]}])
    assert r.messages[0]["content"] == "see " + IMAGE_MARKER
    assert r.messages[1]["content"] == IMAGE_MARKER
    assert [(i.data, i.where) for i in r.images] == [(png, "messages[0].content[1]"),
                                                     (png, "messages[1].content[0]")]


@pytest.mark.parametrize("url, words", [
    ("https://example.com/cat.png", "images must be data URIs"),
    ("data:image/png;base64", "images must be data URIs"),
    ("data:image/png,abc", "image data URIs must be base64"),
    ("data:image/png;base64,!!!", "the image's base64 does not decode"),
])
def test_image_refusals_name_the_part(url, words):
    message = refused(oa.parse_chat, {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x"}, image_part({"url": url})]}]})
    assert message.startswith("messages[0].content[1]: ") and words in message


def test_completion_prompts():
    assert oa.parse_completion({"model": "m", "prompt": "a"}).prompts == ["a"]
    assert oa.parse_completion({"model": "m", "prompt": ["a", "b"]}).prompts == ["a", "b"]
    assert oa.parse_completion({"model": "m", "prompt": [1, 2]}).prompts == [[1, 2]]
    assert oa.parse_completion({"model": "m", "prompt": [[1], [2, 3]]}).prompts == [[1], [2, 3]]
    r = oa.parse_completion({"model": "m", "prompt": "a", "echo": True, "logprobs": 2})
    assert r.echo is True and r.logprobs == 2
    assert oa.parse_completion({"model": "m", "prompt": "a", "logprobs": 0}).logprobs == 0
    assert oa.parse_completion({"model": "m", "prompt": "a", "logprobs": False}).logprobs is None
    assert oa.parse_completion({"model": "m", "prompt": "a"}).echo is False


def test_at_most_16_completions():
    assert len(oa.parse_completion({"model": "m", "prompt": ["a"] * 8, "n": 2}).prompts) == 8
    assert oa.parse_completion({"model": "m", "prompt": [1, 2, 3], "n": 16}).n == 16
    assert "at most 16 completions per request" in refused(
        oa.parse_completion, {"model": "m", "prompt": ["a"] * 9, "n": 2})
    assert "at most 16" in refused(oa.parse_completion, {"model": "m", "prompt": ["a"] * 17})


def test_embeddings():
    r = oa.parse_embeddings({"model": "e", "input": "a"})
    assert (r.model, r.inputs, r.encoding_format, r.dimensions) == ("e", ["a"], "float", None)
    assert oa.parse_embeddings({"model": "e", "input": [1, 2]}).inputs == [[1, 2]]
    assert oa.parse_embeddings({"model": "e", "input": ["a", [3]]}).inputs == ["a", [3]]
    r = oa.parse_embeddings({"model": "e", "input": "a", "encoding_format": "base64", "dimensions": 8})
    assert (r.encoding_format, r.dimensions) == ("base64", 8)
    assert "input" in refused(oa.parse_embeddings, {"model": "e", "input": ""})
    assert "model" in refused(oa.parse_embeddings, {"input": "a"})


def test_exact_store_messages():
    with pytest.raises(store.SchemaError) as caught:
        store.UpdateModel.model_validate({"id": "m", "action": "update", "gguf": {}}).changes("onnx")
    assert str(caught.value) == "Field 'gguf' does not apply to kind 'onnx'; use 'onnx'"


def test_tool_calls_keep_only_what_was_sent():
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}  # no id
    r = chat(messages=[{"role": "assistant", "tool_calls": [call]}])
    assert r.messages[0]["tool_calls"] == [call]


@pytest.mark.parametrize("url, message", [
    ("https://example.com/a,b.png", "images must be data URIs (data:image/png;base64,...); "
                                    "this server does not fetch URLs"),
    ("data:image/png;base64,AAAA,AAAA", "the image's base64 does not decode"),
    ("data:image/png;base64,AAAA,;base64,AAAA", "the image's base64 does not decode"),
])
def test_image_messages_are_exact(url, message):
    got = refused(oa.parse_chat, {"model": "m", "messages": [
        {"role": "user", "content": [image_part({"url": url})]}]})
    assert got == f"messages[0].content[0]: {message}"
