"""Chat completions through the real openai client against a real gunicorn."""
from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from conftest import AUTH

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three colours."}]


def test_temperature_zero_equals_llama_cpp_python(client, reference_llm):
    ours = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0, max_tokens=24)
    ref = reference_llm.create_chat_completion(messages=MESSAGES, temperature=0, max_tokens=24)
    assert ours.choices[0].message.content == ref["choices"][0]["message"]["content"]
    assert ours.choices[0].finish_reason == ref["choices"][0]["finish_reason"]
    assert ours.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    assert ours.usage.completion_tokens == ref["usage"]["completion_tokens"]
    assert ours.usage.total_tokens == ours.usage.prompt_tokens + ours.usage.completion_tokens


def test_stream_matches_plain_and_ends_with_done(client, server):
    plain = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0, max_tokens=20)
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0,
                                                 max_tokens=20, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    # the raw wire format ends with data: [DONE]
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": "chat", "messages": MESSAGES, "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    assert body.rstrip().endswith("data: [DONE]")


def test_mimik_prefix_and_hint_template(server):
    c = openai.OpenAI(base_url=server.url + "/mimik-ai/openai/v1", api_key="1234", max_retries=0)
    r = c.chat.completions.create(model="chat-hint", messages=MESSAGES, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.model == "chat-hint"
    # chatml hint and the GGUF's qwen template differ only in qwen's default system prompt;
    # with a system message given they render the same, so the answers match.
    r2 = c.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5, temperature=0)
    assert r.usage.prompt_tokens == r2.usage.prompt_tokens
    assert r.choices[0].message.content == r2.choices[0].message.content


def test_max_tokens_and_max_completion_tokens(client):
    a = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3, temperature=0,
                                       logit_bias={"151643": -100, "151645": -100})
    b = client.chat.completions.create(model="chat", messages=MESSAGES, max_completion_tokens=4,
                                       temperature=0, logit_bias={"151643": -100, "151645": -100})
    assert (a.usage.completion_tokens, a.choices[0].finish_reason) == (3, "length")
    assert (b.usage.completion_tokens, b.choices[0].finish_reason) == (4, "length")


def test_seed_reproduces_and_sampling_params_accepted(client):
    kw = dict(model="chat", messages=MESSAGES, max_tokens=12, temperature=1.2, top_p=0.9, seed=7,
              presence_penalty=0.5, frequency_penalty=0.3,
              extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1})
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_logit_bias_forces_a_token(client, reference_llm):
    token = reference_llm.tokenize(b" blue", add_bos=False)[0]
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=4, temperature=0,
                                       logit_bias={str(token): 100})
    assert r.choices[0].message.content == " blue" * 4


def test_stop_strings_cut_the_answer(client):
    full = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=30, temperature=0)
    text = full.choices[0].message.content
    stop = text[5:8]
    assert stop and stop in text
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=30, temperature=0,
                                       stop=[stop, "never-there"])
    assert r.choices[0].message.content == text[:text.index(stop)]
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    s = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=30, temperature=0,
                                       stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == text[:text.index(stop)]


def test_logprobs(client):
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


def test_json_schema_answer_parses_and_validates(client):
    schema = {"type": "object", "additionalProperties": False, "required": ["colour", "count", "ok"],
              "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                             "count": {"type": "integer", "enum": [1, 2, 3]},
                             "ok": {"type": "boolean"}}}
    r = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=60, temperature=0.8, seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    answer = json.loads(r.choices[0].message.content)
    assert set(answer) == {"colour", "count", "ok"}
    assert answer["colour"] in ("red", "green", "blue") and answer["count"] in (1, 2, 3)
    assert isinstance(answer["ok"], bool)


BOUNDED = {"type": "object", "additionalProperties": False, "required": ["name", "age", "delta", "tags", "rank"],
           "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 6},
                          "age": {"type": "integer", "minimum": 18, "maximum": 130},
                          "delta": {"type": "integer", "exclusiveMinimum": -20, "exclusiveMaximum": 45},
                          "tags": {"type": "array", "minItems": 1, "maxItems": 3,
                                   "items": {"type": "string", "maxLength": 4}},
                          "rank": {"type": ["integer", "null"], "minimum": 1, "maximum": 3},
                          "flags": {"type": "array", "maxItems": 2, "items": {"type": "boolean"}}}}


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_bounds_hold_when_sampling(client, seed):
    """A random model at temperature 1 writes whatever the grammar lets it: every bound must be in it."""
    r = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=300, temperature=1.0, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "b", "schema": BOUNDED}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), BOUNDED)


def test_json_schema_bound_a_grammar_cannot_hold_is_refused(client):
    schema = {"type": "object", "properties": {"price": {"type": "number", "exclusiveMinimum": 0}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    err = e.value.body
    assert err["code"] == 400 and err["type"] == "invalid_request_error"
    assert "'exclusiveMinimum'" in err["message"] and "'price'" in err["message"]


def test_json_object_answer_parses(client, reference_llm):
    """JSON mode ends with a finished object, which parses.

    The model's weights are random, so left alone it can wander inside a string until
    max_tokens. A bias towards the tokens that close a string and an object ('"' and '}')
    makes it finish early; the grammar still decides which tokens may come at each step,
    so what comes out is JSON because of the grammar, not because of the bias."""
    quote, close = (reference_llm.tokenize(t.encode(), add_bos=False, special=False) for t in ('"', "}"))
    assert len(quote) == len(close) == 1
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=200, temperature=0,
                                       response_format={"type": "json_object"},
                                       logit_bias={str(quote[0]): 4, str(close[0]): 2})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    answer = json.loads(r.choices[0].message.content)
    assert isinstance(answer, dict) and answer  # an object with members, not just {}
    assert r.usage.completion_tokens < 200


def test_n_greater_than_one(client):
    r = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=6, n=3, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 1  # greedy: all the same


NO_EOS = {"151643": -100, "151645": -100}


def _per_choice(chunks):
    """A chat stream's text, finish reasons and chunk order, by choice index."""
    texts, finishes, order = {}, {}, []
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            if ch.finish_reason:
                finishes.setdefault(ch.index, []).append(ch.finish_reason)
            if ch.delta.content:
                order.append(ch.index)
    return texts, finishes, order


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_n_streamed_choices_match_the_whole_answer(client, temperature):
    kw = dict(model="chat", messages=MESSAGES, max_tokens=24, n=3, temperature=temperature, seed=11,
              logit_bias=NO_EOS)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    texts, finishes, order = _per_choice(chunks)
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {0: ["length"], 1: ["length"], 2: ["length"]}  # one finish chunk per choice
    if temperature:  # each choice has its own seed: different texts, so a mix-up would show
        assert len(set(texts.values())) == 3
    # the three were decoded together: their chunks interleave instead of coming one choice after another
    assert order != sorted(order)
    use = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (use.prompt_tokens, use.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    assert whole.usage.completion_tokens == 3 * 24
    one = client.chat.completions.create(**{**kw, "n": 1})
    assert whole.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once, not n times
