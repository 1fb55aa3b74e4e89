"""The Model CRD's schema, and the examples against it."""
from __future__ import annotations

import jsonschema
import pytest
import yaml

from modelyard.operator import builders
from modelyard.operator.settings import OperatorSettings
from modelyard.operator.validation import spec_problems

from .binaries import ROOT

CRD = yaml.safe_load((ROOT / "crds" / "model.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def walk(schema, path="model"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


def test_the_model_resource_contract():
    assert CRD["spec"]["group"] == "modelyard.dev"
    assert CRD["spec"]["names"]["kind"] == "Model" and CRD["spec"]["names"]["plural"] == "models"
    assert CRD["spec"]["scope"] == "Namespaced"
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"]["labelSelectorPath"] == ".status.selector"
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["kind"]["enum"] == ["llm", "vlm", "embed", "onnx"]
    for field in ("version", "source", "sha256", "gguf", "onnx", "replicas", "resources", "nodeSelector",
                  "tolerations", "affinity", "cache", "apiKeySecretRef"):
        assert field in spec, field
    status = SCHEMA["properties"]["status"]["properties"]
    for field in ("phase", "download", "readyReplicas", "endpoint", "conditions", "observedGeneration"):
        assert field in status, field
    assert status["phase"]["enum"] == ["Pending", "Downloading", "Loading", "Ready", "Failed"]
    assert set(status["download"]["properties"]) >= {"size", "totalSize"}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns["Kind"] == ".spec.kind" and columns["Phase"] == ".status.phase"
    assert columns["Progress"] == ".status.download.progress" and columns["Ready"] == ".status.readyReplicas"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_every_field_has_a_description():
    missing = [path for path, schema in walk(SCHEMA)
               if not path.startswith("model.metadata") and not schema.get("description")]
    assert missing == []


def test_exactly_one_source_and_the_id_rules_are_cel_rules():
    source = SCHEMA["properties"]["spec"]["properties"]["source"]
    assert "has(self.huggingface) != has(self.url)" in [r["rule"] for r in source["x-kubernetes-validations"]]
    assert "!self.metadata.name.contains('..')" in [r["rule"] for r in SCHEMA["x-kubernetes-validations"]]


@pytest.mark.parametrize("name, ok", [
    ("smollm2-360m", True), ("llama-3.2-1b", True), (".hidden", False), ("-x", False), ("a" * 254, False),
])
def test_metadata_name_pattern(name, ok):
    rule = SCHEMA["properties"]["metadata"]["properties"]["name"]
    valid = jsonschema.Draft7Validator(rule).is_valid(name)
    assert valid is ok


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_fit_the_crd_and_the_operator(path):
    model = yaml.safe_load(path.read_text())
    jsonschema.validate(model, SCHEMA)  # x-kubernetes-* keys are ignored, the rest is JSON schema
    assert spec_problems(model["metadata"]["name"], model["spec"]) == []
    model["metadata"].update(namespace="default", uid="example")
    builders.build_download_job(model, OperatorSettings())


def test_there_is_one_example_of_each_kind():
    kinds = {yaml.safe_load(p.read_text())["spec"]["kind"] for p in EXAMPLES}
    assert kinds == {"llm", "vlm", "embed", "onnx"}


def test_a_bad_spec_fails_the_schema():
    model = yaml.safe_load(EXAMPLES[0].read_text())
    model["spec"]["kind"] = "chat"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(model, SCHEMA)


def test_kv_cache_type_is_the_servers_list_and_refuses_others():
    from modelyard.server.shared.facts import KV_CACHE_TYPES

    field = SCHEMA["properties"]["spec"]["properties"]["gguf"]["properties"]["kvCacheType"]
    assert tuple(field["enum"]) == KV_CACHE_TYPES
    assert "q8_0" in field["description"] and "flash attention" in field["description"]
    model = yaml.safe_load(next(p for p in EXAMPLES if "llama" in p.name).read_text())
    assert model["spec"]["gguf"]["kvCacheType"] == "q8_0"
    jsonschema.validate(model, SCHEMA)
    for bad in ("q5_0", "Q8_0", 8):
        model["spec"]["gguf"]["kvCacheType"] = bad
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(model, SCHEMA)
    # an embed model has no KV cache to quantize: a CEL rule, which jsonschema does not run
    rules = [r["rule"] for r in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]]
    assert any("kvCacheType" in r and "['llm', 'vlm']" in r for r in rules)
