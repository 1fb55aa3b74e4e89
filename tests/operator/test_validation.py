import pytest

from modelyard.operator.validation import name_problem, spec_problems

from .conftest import make_model


def test_a_good_spec_has_no_problems(model):
    assert spec_problems("smollm2-360m", model["spec"]) == []


@pytest.mark.parametrize("name", [".hidden", "-x", "a..b", "a/b", "", "x" * 254])
def test_names_against_the_id_rules(name):
    assert name_problem(name)


@pytest.mark.parametrize("name", ["smollm2-360m", "llama-3.2-1b", "my_model_v1"])
def test_good_names(name):
    assert name_problem(name) is None


def test_exactly_one_source():
    both = make_model(source={"url": "https://x/y.gguf", "huggingface": {"repo": "a/b", "file": "c"}})
    none = make_model(source={})
    for model in (both, none):
        assert spec_problems("m", model["spec"]) == ["spec.source: set exactly one of huggingface or url"]


def test_a_vlm_needs_its_projector():
    vlm = make_model(kind="vlm")
    assert any("projector" in p for p in spec_problems("m", vlm["spec"]))
    vlm["spec"]["source"]["huggingface"]["mmprojFile"] = "mmproj.gguf"
    assert spec_problems("m", vlm["spec"]) == []


def test_kind_sha_and_numbers():
    bad = make_model(kind="chat", sha256="xyz", replicas=-1)
    problems = spec_problems("m", bad["spec"])
    assert any(p.startswith("spec.kind must be one of llm, vlm, embed, onnx") for p in problems)
    assert "spec.sha256 must be 64 hexadecimal characters" in problems
    assert "spec.replicas must be an integer of at least 0" in problems


def test_url_source_must_be_http():
    assert spec_problems("m", make_model(source={"url": "ftp://x/y.gguf"})["spec"]) == [
        "spec.source.url must be an http(s) URL"]


def test_kv_cache_type():
    assert spec_problems("m", make_model(gguf={"kvCacheType": "q8_0"})["spec"]) == []
    assert spec_problems("m", make_model(gguf={"kvCacheType": "q5_1"})["spec"]) == [
        "spec.gguf.kvCacheType must be one of f16, q8_0, q4_0 (got 'q5_1')"]
    embed = make_model(kind="embed", gguf={"kvCacheType": "q4_0"})
    assert spec_problems("m", embed["spec"]) == [
        "spec.gguf.kvCacheType applies only to kinds llm and vlm: an embed model keeps no KV cache between batches"]
    assert spec_problems("m", make_model(kind="embed", gguf={"kvCacheType": "f16"})["spec"]) == []


@pytest.mark.parametrize("autoscaling, problem", [
    ({"maxReplicas": 3}, None),
    ({"minReplicas": 0, "maxReplicas": 1, "targetRequests": 1, "scaleDownDelaySeconds": 0}, None),
    ({"minReplicas": 3, "maxReplicas": 2}, "spec.autoscaling.minReplicas (3) must be at most maxReplicas (2)"),
    ({"maxReplicas": 0}, "spec.autoscaling.maxReplicas must be an integer of at least 1"),
    ({"maxReplicas": 2, "targetRequests": 0}, "spec.autoscaling.targetRequests must be an integer of at least 1"),
    ({"minReplicas": 1}, "spec.autoscaling.maxReplicas is required"),
    ("fast", "spec.autoscaling must be an object"),
])
def test_autoscaling(autoscaling, problem):
    """The CRD's schema and CEL rule say the same to the API server (tests/cluster/test_scaling.py)."""
    assert spec_problems("m", make_model(autoscaling=autoscaling)["spec"]) == ([problem] if problem else [])
