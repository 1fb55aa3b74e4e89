"""Every child manifest of a few different Models, compared whole against
golden_manifests.json (reviewed by hand): the values that the schema checks in
test_builders.py cannot pin (probe timings, rollout strategy, security settings,
labels, the fetch command). MODELYARD_UPDATE_GOLDEN=1 rewrites it; review the diff."""
from __future__ import annotations

import json
import os
from pathlib import Path

from modelyard.operator import builders
from modelyard.operator.settings import OperatorSettings

from .conftest import make_model

GOLDEN = Path(__file__).with_name("golden_manifests.json")


def models() -> dict[str, dict]:
    vlm = make_model(kind="vlm", sha256="ab" * 32, source={"huggingface": {
        "repo": "org/vlm-GGUF", "file": "m.gguf", "mmprojFile": "mmproj.gguf", "revision": "v2"},
        "tokenSecretRef": {"name": "hf", "key": "tok"}}, apiKeySecretRef={"name": "keys", "key": "k"},
        nodeSelector={"pool": "gpu-a"}, tolerations=[{"key": "dedicated", "operator": "Exists"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        cache={"size": "50Gi", "storageClassName": "fast", "accessMode": "ReadWriteMany"})
    vlm["metadata"]["name"] = "llava.1-5"
    url = make_model(source={"url": "https://example.com/m.gguf", "mmprojUrl": None,
                             "tokenSecretRef": {"name": "t"}}, resources={"gpu": 0}, replicas=0)
    url["apiVersion"] = "modelyard.dev/v1"
    onnx = make_model(kind="onnx", source={"url": "https://example.com/m.onnx"},
                      onnx={"executionProvider": "cuda"}, gguf=None, resources={"gpu": 2})
    hf_default = make_model(source={"huggingface": {"repo": "org/r", "file": "f.gguf"}})
    return {"vlm": vlm, "url": url, "onnx": onnx, "hf-default": hf_default}


def manifests() -> dict:
    out = {}
    for settings_name, settings in {
        "default": OperatorSettings(server_image="example.com/server:1"),
        "tuned": OperatorSettings(server_image="example.com/server:2", startup_seconds=95,
                                  gpu_node_selector={"gpu": "yes"}),
    }.items():
        for name, model in models().items():
            digest = builders.source_hash(model["spec"])
            deployment = builders.build_deployment(model, settings, source_hash=digest)
            out[f"{settings_name}/{name}"] = {
                "source_hash": digest,
                "fetch_command": builders.fetch_command(model["metadata"]["name"], model["spec"]),
                "pvc": builders.build_pvc(model, settings),
                "job": builders.build_download_job(model, settings),
                "secret": builders.build_api_key_secret(model, "k3y"),
                "service": builders.build_service(model),
                "deployment": deployment,
                "pod_spec_hash": builders.pod_spec_hash(deployment["spec"]["template"]),
            }
    return out


def test_manifests_are_as_reviewed():
    got = json.loads(json.dumps(manifests()))
    if os.environ.get("MODELYARD_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert got.keys() == expected.keys()
    for key in expected:
        for part in expected[key]:
            assert got[key][part] == expected[key][part], f"{key}: {part}"


def test_the_pod_spec_hash_ignores_its_own_annotation():
    settings = OperatorSettings(server_image="example.com/server:1")
    model = make_model()
    template = builders.build_deployment(model, settings, source_hash="x")["spec"]["template"]
    before = builders.pod_spec_hash(template)
    template["metadata"]["annotations"]["modelyard.dev/pod-spec-hash"] = "something else"
    assert builders.pod_spec_hash(template) == before
    assert template["metadata"]["annotations"]["modelyard.dev/pod-spec-hash"] == "something else"
    template["spec"]["containers"][0]["image"] = "other"
    assert builders.pod_spec_hash(template) != before
