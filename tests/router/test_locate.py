"""Where each API family puts the model, and the conversation prefix the ring hashes."""
from __future__ import annotations

import pytest

from modelyard.server.router.locate import Locator, adapters_of, balance_key, conversation_prefix, model_of

LOCATOR = Locator()


@pytest.mark.parametrize(("path", "body", "query", "model"), [
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, {}, "tiny"),
    ("/mimik-ai/openai/v1/embeddings", {"model": "emb", "input": "x"}, {}, "emb"),
    ("/v1/models/tiny", None, {}, "tiny"),
    ("/v1/messages", {"model": "tiny", "max_tokens": 5}, {}, "tiny"),
    ("/v1/messages/count_tokens", {"model": "tiny"}, {}, "tiny"),
    ("/v2/models/clf/infer", {"inputs": []}, {}, "clf"),
    ("/v2/models/clf/ready", None, {}, "clf"),
    ("/store/v1/models/tiny", None, {}, "tiny"),
    ("/mimik-ai/store/v1/models/tiny/download", None, {}, "tiny"),
    ("/api/chat", {"model": "tiny:latest"}, {}, "tiny:latest"),
    ("/api/embed", {"model": "emb", "input": ["a"]}, {}, "emb"),
    ("/api/show", {"name": "tiny"}, {}, "tiny"),  # Ollama's older spelling
    ("/api/show", {"model": "a", "name": "b"}, {}, "a"),
    ("/api/show", None, {"name": "tiny"}, "tiny"),  # the Ollama Toolkit's GET form
    ("/api/models/tiny/unload", None, {}, "tiny"),  # Mullama
    ("/api/engine/chat", {"model_id": "tiny", "messages": []}, {}, "tiny"),  # Silicon
    ("/api/engine/models/tiny/format", None, {}, "tiny"),
])
def test_model_where_each_family_puts_it(path, body, query, model):
    located = LOCATOR.find(path)
    assert located is not None, path
    assert model_of(located, body, query) == model


def test_a_body_without_the_field_names_no_model():
    assert model_of(LOCATOR.find("/api/generate"), {"prompt": "hi"}, {}) is None
    assert model_of(LOCATOR.find("/api/engine/chat"), {"model": "tiny"}, {}) is None  # Silicon's is model_id
    assert model_of(LOCATOR.find("/v1/chat/completions"), ["not", "an", "object"], {}) is None


def test_unknown_routes_are_not_found():
    assert LOCATOR.find("/v1/nothing") is None
    assert LOCATOR.find("/api/engine/models/x/y/z") is None


def test_which_routes_hash_their_conversation():
    assert LOCATOR.find("/v1/chat/completions").conversation
    assert LOCATOR.find("/api/generate").conversation
    assert not LOCATOR.find("/v1/embeddings").conversation
    assert not LOCATOR.find("/api/embeddings").conversation  # a `prompt`, but not a conversation


def test_conversation_prefix_is_the_system_text_and_the_first_user_message():
    body = {"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image_url"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]}
    assert conversation_prefix(body, 1000) == "You are terse.\nfirst"
    # A later turn of the same conversation hashes the same.
    shorter = {"model": "m", "messages": body["messages"][:2]}
    assert conversation_prefix(shorter, 1000) == conversation_prefix(body, 1000)
    assert conversation_prefix(body, 5) == "You a"


def test_conversation_prefix_of_anthropic_ollama_and_prompts():
    assert conversation_prefix({"system": "sys", "messages": [{"role": "user", "content": "hi"}]}, 100) == "sys\nhi"
    assert conversation_prefix({"system": [{"type": "text", "text": "blocks"}], "messages": []}, 100) == "blocks"
    assert conversation_prefix({"prompt": "once upon", "system": "s"}, 100) == "s\nonce upon"
    assert conversation_prefix({"input": "embed me"}, 100) == ""
    assert conversation_prefix(None, 100) == ""


def test_the_adapters_a_body_turns_on():
    assert adapters_of({"lora": [{"id": "b", "scale": 0.5}, {"id": "a"}, {"id": "off", "scale": 0}]}) == ["a", "b"]
    assert adapters_of({"lora": "not a list"}) == [] and adapters_of(None) == []
    assert adapters_of({"lora": [{"scale": 1}, "x", {"id": ""}]}) == []


def test_the_balance_key_is_the_model_its_adapters_and_the_conversation():
    chat = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}
    assert balance_key("tiny", chat, 100) == "tiny\nS\nU"
    on_a = {**chat, "lora": [{"id": "a", "scale": 1.0}]}
    assert balance_key("tiny", on_a, 100) == "tiny\nlora:a\nS\nU"
    # An adapter named as the model is in the key through the model.
    assert balance_key("tiny-ft", chat, 100) != balance_key("tiny", chat, 100)
    assert balance_key("tiny", {"lora": [{"id": "a"}], "input": "x"}, 100) is None  # no conversation
