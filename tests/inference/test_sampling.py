"""Batching and sampling as defined: concurrent sequences do not mix, and each sampler
knob does what its definition says at its extremes. Greedy is the reference throughout:
with temperature 0 the answer is a function of the prompt alone."""
from __future__ import annotations

import json
import threading

import httpx
import pytest

from conftest import AUTH

# EOS and end-of-turn banned, so every answer runs to max_tokens and texts are comparable.
NO_EOS = {"151643": -100, "151645": -100}
PROMPTS = [f"Story number {i} begins with" for i in range(8)]
TOKENS = 32


def complete(client, prompt, **params):
    params.setdefault("max_tokens", TOKENS)
    params.setdefault("logit_bias", NO_EOS)
    extra = {k: params.pop(k) for k in ("top_k", "min_p", "repeat_penalty") if k in params}
    r = client.completions.create(model="chat", prompt=prompt, extra_body=extra or None, **params)
    assert r.choices[0].finish_reason == "length"
    return r.choices[0].text


def stream_text(client, prompt, out, i):
    chunks = client.completions.create(model="chat", prompt=prompt, max_tokens=TOKENS, temperature=0,
                                       logit_bias=NO_EOS, stream=True)
    out[i] = "".join(c.choices[0].text for c in chunks if c.choices)


@pytest.fixture(scope="module")
def client8(start_server):
    """A server with 8 slots, so that all 8 streams decode in one batch."""
    import openai

    server = start_server("--parallel", "8")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="1234", max_retries=0, timeout=120)


def test_all_eight_concurrent_streams_equal_each_request_alone(client8):
    alone = {}
    for i, prompt in enumerate(PROMPTS):
        stream_text(client8, prompt, alone, i)
    assert len(set(alone.values())) > 1  # different prompts: a mix-up would show
    together: dict[int, str] = {}
    threads = [threading.Thread(target=stream_text, args=(client8, p, together, i))
               for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert together == alone


def test_top_k_one_is_greedy_at_any_temperature(client):
    greedy = complete(client, PROMPTS[0], temperature=0)
    for seed in (1, 2, 3):
        assert complete(client, PROMPTS[0], temperature=1.5, top_k=1, seed=seed) == greedy


def test_sampling_is_random_without_limits(client):
    """The other side of the extremes below: top_p 1 and min_p 0 limit nothing, so a hot
    temperature samples: different seeds give different texts."""
    texts = {complete(client, PROMPTS[0], temperature=1.5, top_p=1, min_p=0, seed=s) for s in (1, 2, 3)}
    assert len(texts) > 1


def test_top_p_near_zero_keeps_only_the_top_token(client):
    greedy = complete(client, PROMPTS[1], temperature=0)
    for seed in (1, 2, 3):
        assert complete(client, PROMPTS[1], temperature=1.5, top_p=1e-6, seed=seed) == greedy


def test_min_p_one_keeps_only_the_top_token(client):
    greedy = complete(client, PROMPTS[2], temperature=0)
    for seed in (1, 2, 3):
        assert complete(client, PROMPTS[2], temperature=1.5, min_p=1.0, seed=seed) == greedy


def test_same_seed_same_sample(client):
    a = complete(client, PROMPTS[3], temperature=1.5, seed=42)
    assert complete(client, PROMPTS[3], temperature=1.5, seed=42) == a


@pytest.mark.parametrize("penalty", [{"presence_penalty": 2.0}, {"frequency_penalty": 2.0},
                                     {"repeat_penalty": 2.0}])
def test_a_repetition_penalty_changes_the_output(client, reference_llm, penalty):
    """A random model hardly repeats itself, so a bias makes it: with ' the' favoured,
    greedy decoding says it again and again. Each penalty on tokens already generated
    must take it off them."""
    [the] = reference_llm.tokenize(b" the", add_bos=False, special=False)
    bias = {**NO_EOS, str(the): 4}

    def tokens(**params):
        r = client.completions.create(model="chat", prompt=PROMPTS[4], max_tokens=TOKENS, temperature=0,
                                      logit_bias=bias, logprobs=1, **params)
        return r.choices[0].logprobs.tokens

    plain = tokens()
    extra = {"extra_body": penalty} if "repeat_penalty" in penalty else penalty
    penalised = tokens(**extra)
    assert plain.count(" the") >= 5  # the bias made it repeat
    assert penalised != plain
    assert penalised.count(" the") <= plain.count(" the") // 2


def test_streamed_logprobs_equal_the_whole_answers(client):
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(model="chat", messages=messages, temperature=0, max_tokens=12,
                                           logprobs=True, top_logprobs=3, logit_bias=NO_EOS)
    expected = [(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs])
                for t in whole.choices[0].logprobs.content]
    assert len(expected) == 12
    chunks = list(client.chat.completions.create(model="chat", messages=messages, temperature=0,
                                                 max_tokens=12, logprobs=True, top_logprobs=3,
                                                 logit_bias=NO_EOS, stream=True))
    got = [(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs])
           for c in chunks if c.choices and c.choices[0].logprobs
           for t in c.choices[0].logprobs.content or []]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (token, lp, top), (_, lp_whole, top_whole) in zip(got, expected):
        assert lp == pytest.approx(lp_whole, abs=1e-4) and lp <= 0
        assert len(top) == 3 and top[0][0] == token  # greedy: the chosen token is the likeliest
        assert [t for t, _ in top] == [t for t, _ in top_whole]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "".join(g[0] for g in got) == text == whole.choices[0].message.content


def test_streamed_completion_logprobs(server):
    body = {"model": "chat", "prompt": PROMPTS[5], "max_tokens": 8, "temperature": 0,
            "logprobs": 2, "logit_bias": NO_EOS}
    whole = httpx.post(server.url + "/v1/completions", headers=AUTH, json=body, timeout=60).json()
    tokens = whole["choices"][0]["logprobs"]["tokens"]
    with httpx.stream("POST", server.url + "/v1/completions", headers=AUTH, timeout=60,
                      json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    streamed = [t for e in events for c in e["choices"] if c.get("logprobs")
                for t in c["logprobs"]["tokens"]]
    assert streamed == tokens and len(tokens) == 8
    lps = [lp for e in events for c in e["choices"] if c.get("logprobs")
           for lp in c["logprobs"]["token_logprobs"]]
    assert lps == pytest.approx(whole["choices"][0]["logprobs"]["token_logprobs"], abs=1e-4)
