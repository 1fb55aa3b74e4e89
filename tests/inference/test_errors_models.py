"""The mimOE OpenAI API's error table, the models routes, and load-on-first-use."""
from __future__ import annotations

import time

import httpx
import openai
import pytest

from conftest import AUTH, CTX, KEY

MSG = [{"role": "user", "content": "hi"}]


def test_unknown_model_is_404_in_seed_shape(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="unknown-model", messages=MSG)
    assert e.value.status_code == 404
    r = httpx.post(server.url + "/mimik-ai/openai/v1/chat/completions", headers=AUTH,
                   json={"model": "unknown-model", "messages": MSG})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == 404 and "unknown-model" in err["message"] and err["type"]


def test_model_not_ready_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="pending", messages=MSG)
    assert "not ready" in e.value.message


def test_auth_401_for_a_missing_or_wrong_key(server):
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "chat", "messages": MSG})
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    # A wrong key is a 401 too, as OpenAI answers it: the SDK raises AuthenticationError.
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401 and e.value.body["type"] == "invalid_api_key"
    assert httpx.post(server.url + "/v2/models/clf/infer", json={}).status_code == 401


def test_prompt_too_long_is_400_with_numbers(client):
    long = "word " * (CTX + 50)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": long}])
    msg = e.value.message
    assert f"{CTX} tokens" in msg and "prompt has" in msg
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=MSG, max_tokens=CTX)
    assert f"max_tokens asks for {CTX}" in e.value.message


def test_no_template_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="plain", messages=MSG)
    assert "chat template" in e.value.message and "chatTemplateHint" in e.value.message
    # the same model completes raw text fine
    r = client.completions.create(model="plain", prompt="Once upon", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3


def test_invalid_requests_are_400(client, server):
    for body in ({"model": "chat"}, {"model": "chat", "messages": []},
                 {"model": "chat", "messages": MSG, "temperature": 5},
                 {"model": "chat", "messages": [{"role": "robot", "content": "x"}]},
                 {"model": "chat", "messages": MSG, "response_format": {"type": "yaml"}},
                 {"model": "chat", "messages": MSG, "tool_choice": "required"}):
        r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_wrong_kind_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="chat", input="x")
    assert "embed" in e.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="embed", messages=MSG)


def test_image_parts_on_a_text_model_are_400(client):
    png = "data:image/png;base64,iVBORw0KGgo="
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": png}}]}])
    assert "image" in e.value.message.lower()


def test_models_list_preload_and_unload(start_server):
    server = start_server("--parallel", "2")
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    assert c.models.list().data == []
    r = httpx.post(server.url + "/v1/models", headers=AUTH, json={"model": "chat"}, timeout=60)
    assert r.status_code == 200 and r.json()["id"] == "chat"
    listed = c.models.list().data
    assert [(m.id, m.object, m.owned_by) for m in listed] == [("chat", "model", "local")]
    assert listed[0].created > 1_700_000_000
    # first use loads too
    c.embeddings.create(model="embed", input="hello")
    assert {m.id for m in c.models.list().data} == {"chat", "embed"}
    metrics = httpx.get(server.url + "/metrics").text
    assert "modelyard_loaded_models 2.0" in metrics
    r = httpx.delete(server.url + "/v1/models/chat", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert {m.id for m in c.models.list().data} == {"embed"}
    assert httpx.delete(server.url + "/v1/models/chat", headers=AUTH).status_code == 404
    assert httpx.delete(server.url + "/v1/models/nope", headers=AUTH).status_code == 404
    assert httpx.post(server.url + "/v1/models", headers=AUTH, json={"model": "nope"}).status_code == 404
    # it loads again on the next use
    r = c.chat.completions.create(model="chat", messages=MSG, max_tokens=2)
    assert r.choices[0].message.role == "assistant"


def test_preload_makes_readyz_wait(start_server):
    server = start_server("--preload", "chat", "--preload", "clf")
    server.wait_up("/readyz", 60)
    assert httpx.get(server.url + "/readyz").status_code == 200
    ids = {m["id"] for m in httpx.get(server.url + "/v1/models", headers=AUTH).json()["data"]}
    assert ids == {"chat", "clf"}
    assert httpx.get(server.url + "/v2/health/ready", headers=AUTH).json() == {"ready": True}


def test_preload_of_unknown_model_never_ready(start_server):
    server = start_server("--preload", "missing")
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 503


def test_serve_time_overrides_apply_to_preloaded_models(start_server):
    """In a cluster the store is read-only; the operator passes serving fields as flags."""
    server = start_server("--preload", "chat", env={"MODELYARD_INIT_CONTEXT_SIZE": "256"})
    server.wait_up("/readyz", 60)
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    long_prompt = [{"role": "user", "content": "count " * 300}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="chat", messages=long_prompt, max_tokens=4)
    assert "context is 256 tokens" in e.value.message
    # A model that is not preloaded keeps the registry's own value.
    r = c.chat.completions.create(model="chat-hint", messages=long_prompt, max_tokens=1)
    assert 256 < r.usage.prompt_tokens < CTX


def test_readyz_says_why_a_preload_failed(start_server):
    server = start_server("--preload", "chat", "--preload", "missing-model", "--preload", "pending")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = httpx.get(server.url + "/readyz")
        if r.json().get("errors"):
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json()["status"] == "loading"
    errors = r.json()["errors"]
    assert errors["missing-model"] == "Model 'missing-model' not found"
    assert "not ready" in errors["pending"]
    assert "chat" not in errors
    assert httpx.get(server.url + "/v2/health/ready", headers=AUTH).json() == {"ready": False, "errors": errors}
