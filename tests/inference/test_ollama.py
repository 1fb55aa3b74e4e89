"""Ollama's API through the official `ollama` client, unchanged, against a real gunicorn."""
from __future__ import annotations

import base64
import json
import threading

import httpx
import jsonschema
import ollama
import pytest

from conftest import AUTH
from test_vision import RED

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "num_predict": 16}


@pytest.fixture(scope="module")
def oc(server):
    return ollama.Client(host=server.url, headers=AUTH, timeout=120)


def test_root_and_version(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert httpx.head(server.url + "/").status_code == 200
    r = httpx.get(server.url + "/api/version", headers=AUTH)
    assert r.status_code == 200 and r.json()["version"]


def test_list_names_and_details(oc):
    models = {m.model: m for m in oc.list().models}
    assert "chat:latest" in models and "embed:latest" in models
    assert "clf:latest" not in models  # onnx models are not Ollama's
    chat = models["chat:latest"]
    assert chat.details.format == "gguf" and chat.details.family == "llama"
    assert chat.details.quantization_level == "F16"
    assert chat.size > 0 and chat.digest


def test_show_has_model_info_template_and_capabilities(oc, server):
    shown = oc.show("chat")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities and "embedding" not in shown.capabilities
    assert shown.template and shown.details.family == "llama"
    assert "embedding" in oc.show("embed:latest").capabilities
    # the Ollama Toolkit's GET form
    r = httpx.get(server.url + "/api/show", params={"name": "chat:latest"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["format"] == "gguf" and r.json()["name"] == "chat:latest"
    toolkit = {"name", "modified_at", "size", "digest", "format", "family", "parameter_size",
               "quantization_level", "model_file"}
    assert toolkit <= set(r.json()), toolkit - set(r.json())
    assert r.json()["model_file"].endswith("model.gguf") and r.json()["size"] > 0
    assert r.json()["digest"].startswith("sha256:") and len(r.json()["digest"]) == 71


def test_unknown_model_is_a_404_with_ollamas_error(oc, server):
    with pytest.raises(ollama.ResponseError) as e:
        oc.chat(model="nope", messages=MESSAGES)
    assert e.value.status_code == 404
    r = httpx.post(server.url + "/api/chat", headers=AUTH, json={"model": "nope", "messages": MESSAGES})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = httpx.post(server.url + "/api/chat", headers=AUTH, json={"model": 5})
    assert r.status_code == 400 and "model" in r.json()["error"]


def test_chat_greedy_equals_the_openai_route(oc, client):
    ours = oc.chat(model="chat", messages=MESSAGES, options={**GREEDY, "repeat_penalty": 1.1})
    ref = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0, max_tokens=16,
                                         extra_body={"repeat_penalty": 1.1})
    assert ours.message.content == ref.choices[0].message.content
    assert ours.done and ours.done_reason == ref.choices[0].finish_reason
    assert ours.eval_count == ref.usage.completion_tokens
    assert ours.prompt_eval_count == ref.usage.prompt_tokens
    assert ours.total_duration > 0 and ours.eval_duration > 0


def test_chat_stream_is_ndjson_and_adds_up(oc, server):
    whole = oc.chat(model="chat", messages=MESSAGES, options=GREEDY)
    parts = list(oc.chat(model="chat", messages=MESSAGES, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].eval_count == whole.eval_count and parts[-1].done_reason
    with httpx.stream("POST", server.url + "/api/chat", headers=AUTH, timeout=60,
                      json={"model": "chat", "messages": MESSAGES, "options": {"num_predict": 3}}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and all(not x["done"] for x in lines[:-1])


def test_generate_returns_context_and_continues_from_it(oc):
    first = oc.generate(model="chat", prompt="Count: one, two,", options=GREEDY)
    assert first.response and first.context and first.done_reason in ("stop", "length")
    assert len(first.context) == first.prompt_eval_count + first.eval_count
    again = oc.generate(model="chat", prompt=" and", context=first.context, options={**GREEDY, "num_predict": 4})
    assert again.prompt_eval_count == len(first.context) + len(again.context) - len(first.context) - again.eval_count
    streamed = list(oc.generate(model="chat", prompt="Count: one, two,", options=GREEDY, stream=True))
    assert "".join(p.response for p in streamed) == first.response
    assert streamed[-1].context == first.context


def test_an_empty_prompt_loads_the_model(oc):
    r = oc.generate(model="chat", prompt="")
    assert r.done and r.done_reason == "load"
    r = oc.chat(model="chat", messages=[])
    assert r.done and r.done_reason == "load"


def test_format_schema_is_enforced(oc):
    schema = {"type": "object", "required": ["colour"], "additionalProperties": False,
              "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}}}
    r = oc.chat(model="chat", messages=MESSAGES, format=schema, options={"temperature": 0.7, "seed": 1,
                                                                        "num_predict": 60})
    jsonschema.validate(json.loads(r.message.content), schema)


def test_options_that_llama_cpp_cannot_honour_are_ignored(oc):
    r = oc.chat(model="chat", messages=MESSAGES, options={"num_predict": 3, "num_gpu": 1, "use_mmap": True,
                                                          "mirostat": 2, "temperature": 0})
    assert r.eval_count <= 3


def test_history_with_tool_calls_as_objects_is_accepted(oc):
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18 C", "tool_name": "get_weather"}]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    r = oc.chat(model="chat", messages=messages, tools=tools, options={"num_predict": 8, "temperature": 0})
    assert r.done
    for call in r.message.tool_calls or []:
        assert isinstance(call.function.arguments, dict)


def test_images_for_a_vlm(oc):
    img = base64.b64encode(RED).decode()
    r = oc.chat(model="vlm", messages=[{"role": "user", "content": "What is this?", "images": [img]}],
                options={"num_predict": 6, "temperature": 0})
    text_only = oc.chat(model="vlm", messages=[{"role": "user", "content": "What is this?"}],
                        options={"num_predict": 6, "temperature": 0})
    assert r.prompt_eval_count > text_only.prompt_eval_count  # the image filled positions


def test_embed_and_embeddings(oc):
    r = oc.embed(model="embed", input=["first text", "second text"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) > 0
    one = oc.embed(model="embed", input="first text")
    assert one.embeddings[0] == pytest.approx(r.embeddings[0], abs=1e-6)
    old = oc.embeddings(model="embed", prompt="first text")
    assert old.embedding == pytest.approx(r.embeddings[0], abs=1e-6)
    with pytest.raises(ollama.ResponseError) as e:
        oc.embed(model="chat", input="x")
    assert e.value.status_code == 400


def test_ps_lists_loaded_models(oc):
    oc.chat(model="chat", messages=MESSAGES, options={"num_predict": 1})
    loaded = {m.model: m for m in oc.ps().models}
    assert "chat:latest" in loaded and loaded["chat:latest"].context_length > 0


def test_eight_concurrent_chat_streams_batch(oc, server):
    out = {}

    def run(i):
        parts = list(oc.chat(model="chat", messages=[{"role": "user", "content": f"Story {i}"}], stream=True,
                             options={"temperature": 0, "num_predict": 24}))
        out[i] = "".join(p.message.content for p in parts)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(out) == 8
    alone = oc.chat(model="chat", messages=[{"role": "user", "content": "Story 3"}],
                    options={"temperature": 0, "num_predict": 24})
    assert out[3] == alone.message.content


def test_one_name_mapping_for_every_api(oc, client):
    """`name:latest` and `name` are one model, on Ollama's routes and on the OpenAI routes."""
    a = oc.chat(model="chat:latest", messages=MESSAGES, options=GREEDY)
    b = oc.chat(model="chat", messages=MESSAGES, options=GREEDY)
    c = client.chat.completions.create(model="chat:latest", messages=MESSAGES, temperature=0, max_tokens=16,
                                       extra_body={"repeat_penalty": 1.1})
    assert a.message.content == b.message.content == c.choices[0].message.content


def test_copy_shares_the_file_and_delete_keeps_the_other_name(oc, server):
    oc.copy("embed", "embed-copy:v2")
    src = server.store / "models" / "embed" / "model.gguf"
    dst = server.store / "models" / "embed-copy--v2" / "model.gguf"
    assert dst.stat().st_ino == src.stat().st_ino  # one file, two names: no bytes copied
    names = {m.model for m in oc.list().models}
    assert "embed-copy:v2" in names
    r = httpx.get(server.url + "/store/v1/models/embed-copy--v2")
    assert r.status_code == 200 and r.json()["readyToUse"] is True
    first = oc.embed(model="embed-copy:v2", input="first text").embeddings[0]
    oc.delete("embed-copy:v2")
    assert not dst.exists() and src.exists()
    assert "embed-copy:v2" not in {m.model for m in oc.list().models}
    assert oc.embed(model="embed", input="first text").embeddings[0] == pytest.approx(first, abs=1e-6)
    with pytest.raises(ollama.ResponseError) as e:
        oc.delete("embed-copy:v2")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        oc.copy("nope", "other")
    assert e.value.status_code == 404
