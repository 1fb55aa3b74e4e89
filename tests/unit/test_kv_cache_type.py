"""The KV cache type's shared facts: Silicon Studio's kv_quantization mapping, the rule of
which kinds take a type, and the serve-time override of preloaded models."""
from __future__ import annotations

import pytest

from modelyard.server.settings import Settings
from modelyard.server.shared import facts


@pytest.mark.parametrize("bits, expected", [(8, "q8_0"), (4, "q4_0"), (None, "f16")])
def test_kv_quantization_bits(bits, expected):
    assert facts.kv_cache_type_for_bits(bits) == expected
    assert expected in facts.KV_CACHE_TYPES


@pytest.mark.parametrize("bits", [16, 2, 0, True, "8", 8.0, [8]])
def test_other_kv_quantization_values_say_what_is_taken(bits):
    with pytest.raises(ValueError, match="kv_quantization must be 4 or 8"):
        facts.kv_cache_type_for_bits(bits)


@pytest.mark.parametrize("kind, kv, problem", [
    ("llm", "q8_0", None), ("vlm", "q4_0", None), ("llm", None, None), ("embed", "f16", None),
    ("embed", None, None),
    ("llm", "q5_0", "must be one of f16, q8_0, q4_0 (got 'q5_0')"),
    ("embed", "q8_0", "applies only to kinds llm and vlm: an embed model keeps no KV cache between batches"),
    ("onnx", "q4_0", "applies only to kinds llm and vlm: an onnx model keeps no KV cache between batches"),
])
def test_kv_cache_problem(kind, kv, problem):
    assert facts.kv_cache_problem(kind, kv) == problem


def test_the_serve_override_goes_to_preloaded_models_only():
    settings = Settings.from_env({"MODELYARD_KV_CACHE_TYPE": "q4_0", "MODELYARD_PRELOAD": "a"})
    assert settings.kv_cache_type == "q4_0"
    assert settings.overrides_for("a") == {"gguf": {"kvCacheType": "q4_0"}}
    assert settings.overrides_for("b") == {}
    assert Settings.from_env({}, kv_cache_type="q8_0", preload=["a"]).overrides_for("a") == {
        "gguf": {"kvCacheType": "q8_0"}}


def test_serve_refuses_an_unknown_type_before_it_starts(capsys, monkeypatch):
    from modelyard.server import cli

    monkeypatch.delenv("MODELYARD_KV_CACHE_TYPE", raising=False)
    assert cli.main(["serve", "--kv-cache-type", "q5_0"]) == 2
    assert "unknown --kv-cache-type 'q5_0'; use one of: f16, q8_0, q4_0" in capsys.readouterr().err
