"""A loaded model's life: GET /v1/models/{id}, reloads after a re-upload or an update,
an unload in the middle of a generation, and an embedding input over the context."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from conftest import AUTH, KEY

NO_EOS = {"151643": -100, "151645": -100}


def create(server, model_id, **fields):
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                   json={"id": model_id, "version": "1", "kind": "llm", **fields})
    assert r.status_code in (200, 201), r.text


def upload(server, model_id, path):
    with open(path, "rb") as f:
        r = httpx.post(f"{server.url}/store/v1/models/{model_id}/upload", headers=AUTH,
                       files={"file": f}, timeout=120)
    assert r.status_code == 200 and r.json()["readyToUse"] is True, r.text


def completion(server, model_id, prompt="Once upon a time", max_tokens=12):
    r = httpx.post(f"{server.url}/v1/completions", headers=AUTH, timeout=120,
                   json={"model": model_id, "prompt": prompt, "max_tokens": max_tokens,
                         "temperature": 0, "logit_bias": NO_EOS})
    return r


@pytest.fixture(scope="module")
def own_server(start_server):
    """A server of this module's own: these tests load, unload and replace models."""
    return start_server("--parallel", "2")


def test_get_one_model(own_server):
    url = own_server.url
    assert httpx.get(f"{url}/v1/models/chat", headers=AUTH).status_code == 404  # not loaded yet
    assert completion(own_server, "chat").status_code == 200
    r = httpx.get(f"{url}/v1/models/chat", headers=AUTH)
    assert r.status_code == 200
    entry = r.json()
    assert entry["id"] == "chat" and entry["object"] == "model" and entry["created"] > 1_700_000_000
    listed = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]
    assert entry in listed
    # The same under the mimOE prefix, and the error shape of the OpenAI API for others.
    assert httpx.get(f"{url}/mimik-ai/openai/v1/models/chat", headers=AUTH).json() == entry
    missing = httpx.get(f"{url}/v1/models/no-such-model", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404 and "no-such-model" in missing.json()["error"]["message"]


def test_reupload_reloads_the_new_file(own_server, model_files):
    create(own_server, "swap", gguf={"initContextSize": 512})
    upload(own_server, "swap", model_files["chat"])
    first = completion(own_server, "swap").json()["choices"][0]["text"]
    assert first == completion(own_server, "chat").json()["choices"][0]["text"]

    upload(own_server, "swap", model_files["plain"])  # another vocabulary and weights
    second = completion(own_server, "swap").json()["choices"][0]["text"]
    assert second == completion(own_server, "plain").json()["choices"][0]["text"]
    assert second != first


def test_update_of_the_context_size_reloads(own_server, model_files):
    create(own_server, "small", gguf={"initContextSize": 512})
    upload(own_server, "small", model_files["chat"])
    prompt = "word " * 300  # about 300 tokens
    assert completion(own_server, "small", prompt, max_tokens=4).status_code == 200
    r = httpx.put(f"{own_server.url}/store/v1/models", headers=AUTH,
                  json={"id": "small", "action": "update", "gguf": {"initContextSize": 256}})
    assert r.status_code == 200, r.text
    over = completion(own_server, "small", prompt, max_tokens=4)
    assert over.status_code == 400 and "256" in over.json()["error"]["message"], over.text


def test_unload_during_a_generation(own_server):
    """The stream in flight ends with an error event, the unload answers at once, and the
    next request loads the model again."""
    assert completion(own_server, "chat").status_code == 200  # loaded
    events: list = []
    first_token = threading.Event()

    def stream():
        with httpx.stream("POST", f"{own_server.url}/v1/chat/completions", headers=AUTH, timeout=120,
                          json={"model": "chat", "messages": [{"role": "user", "content": "Go on."}],
                                "max_tokens": 400, "temperature": 0, "logit_bias": NO_EOS,
                                "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first_token.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_token.wait(60)
    started = time.monotonic()
    r = httpx.delete(f"{own_server.url}/v1/models/chat", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["deleted"] is True
    reader.join(30)
    assert not reader.is_alive(), "the stream did not end after the unload"
    assert time.monotonic() - started < 30
    assert events[-1] == "[DONE]" or "error" in json.loads(events[-1])
    errors = [json.loads(e) for e in events if e != "[DONE]" and "error" in json.loads(e)]
    finished = [json.loads(e) for e in events if e != "[DONE]" and "error" not in json.loads(e)
                and json.loads(e)["choices"] and json.loads(e)["choices"][0].get("finish_reason")]
    assert errors and not finished, events[-3:]  # cut short, and said so
    assert errors[-1]["error"]["message"]
    assert httpx.get(f"{own_server.url}/v1/models/chat", headers=AUTH).status_code == 404
    assert completion(own_server, "chat").status_code == 200  # loads again


def test_embedding_input_over_the_context_is_400(own_server):
    c = openai.OpenAI(base_url=own_server.url + "/v1", api_key=KEY, max_retries=0)
    c.embeddings.create(model="embed", input="short")
    with pytest.raises(openai.BadRequestError) as caught:
        c.embeddings.create(model="embed", input="hello " * 5000)
    error = caught.value.body if isinstance(caught.value.body, dict) else {}
    # The numbers a client needs: how long the input is, and the model's limit. Far longer than
    # the context can hold, it is refused by its length before it is tokenized (issue 19, item 8).
    assert error.get("message", "").startswith(
        "input[0] is 30000 characters long; this model's context of 512 tokens holds at most "), error
    with pytest.raises(openai.BadRequestError) as caught:
        c.embeddings.create(model="embed", input="hello " * 600)  # within reach: counted in tokens
    error = caught.value.body if isinstance(caught.value.body, dict) else {}
    assert error.get("message") == "input[0] has 602 tokens; this model takes at most 512", error
    # the model still answers afterwards
    assert len(c.embeddings.create(model="embed", input="short").data) == 1
