"""The CRD in a real API server: accepted from the chart, its CEL rules compiled and
enforced, its printer columns and field descriptions served to kubectl."""
from __future__ import annotations

import copy

import pytest
import yaml

from .controlplane import ROOT
from .kubetools import MODELS_NAMESPACE

CRD_NAME = "models.modelyard.dev"
VALID = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "valid-model"},
    "spec": {
        "kind": "llm",
        "source": {"huggingface": {"repo": "org/name", "file": "x.gguf"}},
    },
}


def test_install_accepts_the_crd_and_compiles_its_rules(release, kubectl):
    crd = kubectl.json("crd", CRD_NAME)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True", crd["status"]
    assert conditions.get("NamesAccepted") == "True", crd["status"]
    # A rule the API server could not compile, or whose cost is over budget, is refused at
    # install time: the stored CRD holds every rule of the one in crds/.
    ours = yaml.safe_load((ROOT / "crds" / "model.yaml").read_text())
    assert _rules(crd) == _rules(ours) and _rules(ours)
    # The chart's objects are there, from a real install.
    sa = kubectl.get("serviceaccount", "modelyard", namespace="modelyard-system")
    role = kubectl.get("role", "modelyard", namespace=MODELS_NAMESPACE)
    assert sa is not None and role is not None


def _rules(crd: dict) -> list[str]:
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            found.extend(rule["rule"] for rule in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd["spec"]["versions"])
    return sorted(found)


def _model(name: str = "invalid-model", **spec) -> dict:
    model = copy.deepcopy(VALID)
    model["metadata"]["name"] = name
    model["spec"].update(spec)
    return model


INVALID = {
    "two sources": (
        _model(source={"huggingface": {"repo": "org/name", "file": "x.gguf"}, "url": "https://example.com/x.gguf"}),
        "set exactly one of source.huggingface or source.url",
    ),
    "vlm without projector": (
        _model(kind="vlm"),
        "a vlm needs its projector: set source.huggingface.mmprojFile or source.mmprojUrl",
    ),
    "bad id": (
        _model(name="bad..id"),
        "metadata.name is the model id and cannot contain '..'",
    ),
    "bad sha256": (
        _model(sha256="not-a-digest"),
        "spec.sha256 in body should match '^[A-Fa-f0-9]{64}$'",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_models_are_refused_by_the_api_server(release, kubectl, case):
    body, message = INVALID[case]
    done = kubectl.run("apply", "-n", MODELS_NAMESPACE, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert done.returncode != 0, f"{case} was accepted: {done.stdout}"
    assert "is invalid" in done.stderr and message in done.stderr, done.stderr
    assert kubectl.get("models", body["metadata"]["name"]) is None


def test_a_valid_model_is_accepted_by_a_server_side_dry_run(release, kubectl):
    out = kubectl("apply", "--dry-run=server", "-n", MODELS_NAMESPACE, "-f", "-", input=yaml.safe_dump(VALID))
    assert "created (server dry run)" in out


def test_explain_describes_the_source(release, kubectl):
    out = kubectl("explain", "model.spec.source")
    assert "KIND:       Model" in out and "FIELD: source <Object>" in out, out
    assert "exactly one of huggingface or url" in " ".join(out.split())
    for field in ("huggingface", "url", "mmprojUrl", "tokenSecretRef"):
        assert f"\n  {field}\t" in out or f"\n  {field} " in out, (field, out)
