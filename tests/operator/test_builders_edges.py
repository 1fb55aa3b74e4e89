"""The manifest builders in the cases the other builder tests leave out: defaults a
Model may omit, bodies without apiVersion or kind, and manifests that must not share
objects with the Model or the operator's settings. Written against mutation survivors
(docs/testing.md)."""
import dataclasses

import kubernetes_validate

from modelyard.operator import builders, names
from modelyard.operator.builders.serving import api_key_ref

from .conftest import make_model

K8S_VERSION = "1.33.0"


def container(manifest):
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_editing_a_manifest_leaves_the_model_and_the_defaults_alone(settings):
    """The executor and the API client may add to a manifest; the Model's spec (which
    decides the next pod-spec hash) and the operator's GPU defaults must stay as they were."""
    model = make_model(
        nodeSelector={"pool": "a100"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    )
    before = builders.build_deployment(model, settings, source_hash="abc")
    rollout_hash = dict(before["metadata"]["annotations"])
    pod = before["spec"]["template"]["spec"]
    pod["nodeSelector"]["pool"] = "changed"
    pod["tolerations"][0]["value"] = "changed"
    pod["tolerations"].append({"key": "x", "operator": "Exists"})
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    terms[0]["matchExpressions"][0]["values"].append("b")
    assert model["spec"]["nodeSelector"] == {"pool": "a100"}
    assert model["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    assert model["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["a"]
    # So the next pass builds the same pods: no roll for an edit nobody asked for.
    after = builders.build_deployment(model, settings, source_hash="abc")
    assert after["metadata"]["annotations"] == rollout_hash

    # The settings' GPU defaults, which every GPU Model without its own placement gets.
    gpu_settings = dataclasses.replace(settings, gpu_node_selector={"accelerator": "nvidia"})
    first = builders.build_deployment(make_model(), gpu_settings, source_hash="abc")["spec"]["template"]["spec"]
    first["tolerations"][0]["effect"] = "NoExecute"
    first["tolerations"].clear()
    first["nodeSelector"]["accelerator"] = "changed"
    assert gpu_settings.gpu_tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu_settings.gpu_node_selector == {"accelerator": "nvidia"}
    second = builders.build_deployment(make_model(), gpu_settings, source_hash="abc")["spec"]["template"]["spec"]
    assert second["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert second["nodeSelector"] == {"accelerator": "nvidia"}
    # The download Job is placed like the pods, and as independently.
    job = builders.build_download_job(model, settings)
    job_pod = job["spec"]["template"]["spec"]
    job_pod["tolerations"][0]["value"] = "changed"
    job_pod["affinity"]["nodeAffinity"].clear()
    assert model["spec"]["tolerations"][0]["value"] == "ml"
    assert model["spec"]["affinity"]["nodeAffinity"]


def test_a_body_without_api_version_or_kind_is_still_owned_by_a_model(settings):
    """kopf may hand a body without apiVersion and kind; the ownerReference must still
    name the Model, or the garbage collector would not delete the children with it."""
    model = make_model()
    del model["apiVersion"], model["kind"]
    digest = builders.source_hash(model["spec"])
    for child in (builders.build_pvc(model, settings), builders.build_download_job(model, settings),
                  builders.build_deployment(model, settings, source_hash=digest),
                  builders.build_service(model), builders.build_api_key_secret(model, "k")):
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": names.API_VERSION, "kind": names.KIND, "name": "smollm2-360m",
            "uid": "uid-smollm2", "controller": True, "blockOwnerDeletion": True}]
        assert names.API_VERSION == "modelyard.dev/v1alpha1" and names.KIND == "Model"
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
    # A body that names itself is named as given.
    other = make_model()
    other["apiVersion"], other["kind"] = "modelyard.dev/v1beta1", "OtherModel"
    ref = builders.build_service(other)["metadata"]["ownerReferences"][0]
    assert (ref["apiVersion"], ref["kind"]) == ("modelyard.dev/v1beta1", "OtherModel")


def test_owned_keeps_the_metadata_a_builder_set(model):
    from modelyard.operator.builders.common import owned

    obj = owned({"metadata": {"name": "n", "labels": {"a": "b"}}}, model)
    assert obj["metadata"]["name"] == "n" and obj["metadata"]["labels"] == {"a": "b"}
    assert obj["metadata"]["namespace"] == "ai"
    bare = owned({}, model)
    assert bare["metadata"]["namespace"] == "ai"
    assert bare["metadata"]["ownerReferences"][0]["uid"] == "uid-smollm2"


def test_a_model_without_replicas_gets_one_pod(settings):
    model = make_model()
    del model["spec"]["replicas"]
    deployment = builders.build_deployment(model, settings, source_hash="abc")
    assert deployment["spec"]["replicas"] == 1
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    assert builders.build_deployment(make_model(replicas=0), settings, source_hash="abc")["spec"]["replicas"] == 0


def test_an_own_secret_without_a_key_is_read_at_key(settings):
    model = make_model(apiKeySecretRef={"name": "team-key"})
    ref = {"name": "team-key", "key": "key"}
    server = container(builders.build_deployment(model, settings, source_hash="abc"))
    assert {"name": "MODELYARD_API_KEY", "valueFrom": {"secretKeyRef": ref}} in server["env"]
    assert api_key_ref(model) == ref
    assert api_key_ref(make_model(apiKeySecretRef={"name": "team-key", "key": ""})) == ref
    # Without a Secret of its own, the generated one, at the key the generated Secret has.
    generated = api_key_ref(make_model())
    secret = builders.build_api_key_secret(make_model(), "k")
    assert generated == {"name": secret["metadata"]["name"], "key": "key"}
    assert secret["stringData"] == {generated["key"]: "k"}


def test_the_startup_probe_allows_the_configured_startup_time(settings):
    def startup(seconds):
        quick = dataclasses.replace(settings, startup_seconds=seconds)
        deployment = builders.build_deployment(make_model(), quick, source_hash="abc")
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
        return container(deployment)["startupProbe"]

    for seconds, failures in ((3600, 360), (25, 3), (10, 1), (5, 1), (0, 1)):
        probe = startup(seconds)
        assert probe["periodSeconds"] == 10, seconds
        # At least the configured time, and at least one probe: 0 is not a valid threshold.
        assert probe["failureThreshold"] == failures, seconds
        assert probe["periodSeconds"] * probe["failureThreshold"] >= seconds
