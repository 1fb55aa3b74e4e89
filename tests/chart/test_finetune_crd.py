"""The FineTune CRD's schema: one table of hyper-parameter ranges (server/shared/finetuning.py)
behind its CEL rules, Silicon Studio's request body and the operator's own check."""
from __future__ import annotations

import pytest
import yaml

from modelyard.operator.training import spec_problems
from modelyard.server.shared.finetuning import RANGES

from .binaries import ROOT
from .test_crd import walk

CRD = yaml.safe_load((ROOT / "crds" / "finetune.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
HYPER = SCHEMA["properties"]["spec"]["properties"]["hyperparameters"]["properties"]


def cel_rule(r) -> str:
    """The rule a range reads as in CEL (a number field compares with float literals)."""
    def literal(v):
        return repr(float(v)) if r.type is float else str(int(v))
    return (f"self {'>' if r.low_open else '>='} {literal(r.low)} && "
            f"self {'<' if r.high_open else '<='} {literal(r.high)}")


def test_the_finetune_resource_contract():
    assert CRD["spec"]["group"] == "modelyard.dev" and CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["kind"] == "FineTune" and CRD["spec"]["names"]["plural"] == "finetunes"
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {"Base": ".spec.baseModel", "Phase": ".status.phase", "Progress": ".status.progress",
                       "Loss": ".status.loss", "Adapter": ".status.adapter", "Age": ".metadata.creationTimestamp"}
    status = SCHEMA["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    assert {"step", "totalSteps", "loss", "progress", "adapter", "conditions"} <= set(status)
    spec = SCHEMA["properties"]["spec"]
    assert "self == oldSelf" in [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.path) != has(self.url)" in [
        r["rule"] for r in spec["properties"]["dataset"]["x-kubernetes-validations"]]


def test_every_field_has_a_description():
    assert [p for p, s in walk(SCHEMA, "finetune") if p != "finetune.metadata" and not s.get("description")] == []


@pytest.mark.parametrize("r", RANGES, ids=[r.field for r in RANGES])
def test_each_hyperparameter_is_the_shared_range(r):
    field = HYPER[r.field]
    assert field["type"] == ("integer" if r.type is int else "number")
    assert [v["rule"] for v in field["x-kubernetes-validations"]] == [cel_rule(r)]
    assert r.bounds() in field["description"] and r.name in field["description"]
    assert set(HYPER) == {x.field for x in RANGES}


@pytest.mark.parametrize("r", RANGES, ids=[r.name for r in RANGES])
def test_silicon_studios_body_has_the_same_ranges(r):
    """The API's request body (server/api/silicon) and the table agree, bound for bound."""
    from modelyard.server.api.silicon.finetune import SiliconFinetuneBody

    schema = SiliconFinetuneBody.model_json_schema()["properties"][r.name]
    schema = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
    low = schema.get("exclusiveMinimum" if r.low_open else "minimum")
    high = schema.get("exclusiveMaximum" if r.high_open else "maximum")
    assert (low, high) == (r.low, r.high)
    assert SiliconFinetuneBody.model_fields[r.name].default == r.default


def test_the_operator_refuses_what_the_rules_refuse():
    meta = {"name": "sql-lora"}
    good = {"baseModel": "base", "dataset": {"path": "d.jsonl"}, "hyperparameters": {"learningRate": 1}}
    assert spec_problems({"metadata": meta, "spec": good}) == []
    bad = {"baseModel": "base", "dataset": {"path": "../d.jsonl"}, "adapterName": "a..b",
           "hyperparameters": {"loraDropout": 1.0, "epochs": 2.5, "maxSeqLength": 63, "lora_rank": 8}}
    assert spec_problems({"metadata": meta, "spec": bad}) == [
        "the adapter's name (spec.adapterName, else metadata.name) cannot contain '..'",
        "spec.dataset.path is relative to the cache volume and cannot leave it",
        "spec.hyperparameters.loraDropout must be at least 0 and less than 1 (got 1.0)",
        "spec.hyperparameters.epochs must be an integer",
        "spec.hyperparameters.maxSeqLength must be at least 64 and at most 32768 (got 63)",
        "spec.hyperparameters.lora_rank is not a hyper-parameter (known: epochs, learningRate, batchSize, "
        "loraRank, loraAlpha, loraDropout, loraLayers, maxSeqLength, seed)",
    ]
