"""The legacy completions route: string, list and token prompts, echo, streaming."""
from __future__ import annotations


def test_completion_equals_llama_cpp_python(client, reference_llm):
    ours = client.completions.create(model="chat", prompt="The capital of France is", max_tokens=12, temperature=0)
    ref = reference_llm.create_completion("The capital of France is", max_tokens=12, temperature=0)
    assert ours.choices[0].text == ref["choices"][0]["text"]
    assert ours.usage.prompt_tokens == ref["usage"]["prompt_tokens"]


def test_list_of_prompts_and_token_prompt(client, reference_llm):
    r = client.completions.create(model="chat", prompt=["One", "Two"], max_tokens=4, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    one = client.completions.create(model="chat", prompt="One", max_tokens=4, temperature=0)
    assert r.choices[0].text == one.choices[0].text
    tokens = reference_llm.tokenize(b"One", add_bos=False)
    t = client.completions.create(model="chat", prompt=tokens, max_tokens=4, temperature=0)
    assert t.choices[0].text == one.choices[0].text


def test_echo_and_stream(client):
    plain = client.completions.create(model="chat", prompt="Hello", max_tokens=6, temperature=0)
    echo = client.completions.create(model="chat", prompt="Hello", max_tokens=6, temperature=0, echo=True)
    assert echo.choices[0].text == "Hello" + plain.choices[0].text
    chunks = list(client.completions.create(model="chat", prompt="Hello", max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completion_logprobs(client):
    r = client.completions.create(model="chat", prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens
    assert all(len(t) == 2 for t in lp.top_logprobs)


def test_streamed_prompts_times_n_match_the_whole_answer(client):
    kw = dict(model="chat", prompt=["One", "Two"], n=2, max_tokens=8, temperature=0.9, seed=5, echo=True,
              logit_bias={"151643": -100})
    whole = client.completions.create(**kw)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]  # prompt 0's choices, then prompt 1's
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    texts, finishes = {}, {}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
            if ch.finish_reason:
                finishes.setdefault(ch.index, []).append(ch.finish_reason)
    assert texts == {c.index: c.text for c in whole.choices}
    assert texts[0].startswith("One") and texts[3].startswith("Two")  # echo, per choice
    assert finishes == {i: ["length"] for i in range(4)}
    use = chunks[-1].usage
    assert (use.prompt_tokens, use.completion_tokens) == (whole.usage.prompt_tokens, 4 * 8)
    one = client.completions.create(model="chat", prompt="One", max_tokens=1)
    two = client.completions.create(model="chat", prompt="Two", max_tokens=1)
    assert use.prompt_tokens == one.usage.prompt_tokens + two.usage.prompt_tokens  # once per prompt
