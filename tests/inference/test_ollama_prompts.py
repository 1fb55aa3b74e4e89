"""How /api/generate lays out a prompt: `suffix` (fill in the middle with the model's own
FIM tokens), a request's `template` (Ollama's Go template subset), and a model's system
prompt. Each is compared with the same prompt sent raw, so the layout is what is tested."""
from __future__ import annotations

import httpx
import ollama
import pytest

import modelgen
from conftest import AUTH

GREEDY = {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0}


@pytest.fixture(scope="module")
def oc(server):
    return ollama.Client(host=server.url, headers=AUTH, timeout=120)


@pytest.fixture(scope="module")
def coder(server, tmp_path_factory, oc):
    """A model with starcoder's vocabulary, which has <fim_prefix>, <fim_suffix>, <fim_middle>."""
    path = modelgen.make_llama_gguf(tmp_path_factory.mktemp("coder") / "coder.gguf", vocab="starcoder",
                                    chat_template=None, qtype="Q8_0", seed=4)
    assert oc.create(model="coder", files={"coder.gguf": oc.create_blob(path)}).status == "success"
    return "coder"


def test_suffix_fills_in_the_middle_with_the_models_fim_tokens(oc, coder):
    got = oc.generate(model=coder, prompt="def add(a, b):\n", suffix="\n    return c\n", options=GREEDY)
    # the same prompt laid out by hand: <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
    raw = oc.generate(model=coder, raw=True, options=GREEDY,
                      prompt="<fim_prefix>def add(a, b):\n<fim_suffix>\n    return c\n<fim_middle>")
    assert got.response == raw.response and got.prompt_eval_count == raw.prompt_eval_count
    plain = oc.generate(model=coder, raw=True, prompt="def add(a, b):\n", options=GREEDY)
    assert got.prompt_eval_count > plain.prompt_eval_count


def test_suffix_on_a_model_without_fim_tokens_is_a_400(oc):
    with pytest.raises(ollama.ResponseError) as e:
        oc.generate(model="chat", prompt="a", suffix="b")
    assert e.value.status_code == 400 and "does not support insert" in e.value.error


def test_a_request_template_is_rendered(oc, server):
    template = "{{ if .System }}SYS: {{ .System }}\n{{ end }}USER: {{ .Prompt }}\nBOT:"
    got = oc.generate(model="chat", prompt="hello", system="be kind", template=template, options=GREEDY)
    raw = oc.generate(model="chat", raw=True, prompt="SYS: be kind\nUSER: hello\nBOT:", options=GREEDY)
    assert got.response == raw.response and got.prompt_eval_count == raw.prompt_eval_count
    no_system = oc.generate(model="chat", prompt="hello", template=template, options=GREEDY)
    assert no_system.prompt_eval_count < got.prompt_eval_count
    r = httpx.post(server.url + "/api/generate", headers=AUTH, json={
        "model": "chat", "prompt": "x", "stream": False, "template": "{{ range .Messages }}{{ end }}"})
    assert r.status_code == 400 and "range" in r.json()["error"]


def test_a_models_own_template_serves_generate(oc):
    oc.create(model="templated", from_="chat", template="Q: {{ .Prompt }}\nA:")
    got = oc.generate(model="templated", prompt="two plus two", options=GREEDY)
    raw = oc.generate(model="chat", raw=True, prompt="Q: two plus two\nA:", options=GREEDY)
    assert got.response == raw.response and got.prompt_eval_count == raw.prompt_eval_count
    oc.delete("templated")
