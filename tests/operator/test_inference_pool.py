"""The InferencePool of a Model (Gateway API Inference Extension, inference.networking.k8s.io/v1):
the pure builder and the plan, without a cluster."""
from dataclasses import replace

import pytest

from modelyard.operator import builders
from modelyard.operator.builders.gateway import endpoint_picker_name

from .conftest import condition, make_model, run, serving


@pytest.fixture
def enabled(settings):
    return replace(settings, inference_pool=True, endpoint_picker="gaie-epp", endpoint_picker_port=9002)


def test_the_pool_selects_the_models_pods_on_the_server_port(model, enabled):
    pool = builders.build_inference_pool(model, enabled)
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1" and pool["kind"] == "InferencePool"
    assert pool["metadata"]["name"] == "smollm2-360m" and pool["metadata"]["namespace"] == "ai"
    # the selector is the Deployment's pod selector: the pool's pods are the Model's pods
    deployment = builders.build_deployment(model, enabled, source_hash="h")
    assert pool["spec"]["selector"] == deployment["spec"]["selector"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pool["spec"]["targetPorts"] == [{"number": 8083}]
    assert pool["spec"]["endpointPickerRef"] == {"name": "gaie-epp", "kind": "Service", "port": {"number": 9002},
                                                 "group": "", "failureMode": "FailClose"}
    assert pool["spec"]["appProtocol"] == "http"
    [owner] = pool["metadata"]["ownerReferences"]  # garbage-collected with its Model
    assert owner == {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "name": "smollm2-360m",
                     "uid": "uid-smollm2", "controller": True, "blockOwnerDeletion": True}


def test_the_picker_defaults_to_gaie_charts_name(settings):
    model = make_model()
    model["metadata"]["name"] = "llama-3.2-1b"
    assert endpoint_picker_name(model, settings) == "llama-3-2-1b-epp"
    model["metadata"]["name"] = "x" * 63
    assert endpoint_picker_name(model, settings) == "x" * 40 + "-epp"  # as GAIE's chart cuts it


def test_who_asks(settings, enabled):
    assert not builders.wants_inference_pool({}, settings)
    assert builders.wants_inference_pool({}, enabled)
    assert builders.wants_inference_pool({"inferencePool": True}, settings)  # the Model asks
    assert not builders.wants_inference_pool({"inferencePool": False}, enabled)  # or declines


def observed(model, settings, **kw):
    """A Model that serves, with what `kw` says of InferencePools."""
    return replace(serving(model, settings), **kw)


def test_planned_when_served(model, enabled):
    result = run(observed(model, enabled, pools_served=True), enabled)
    [create] = [a for a in result.actions if a.resource == "inferencepools"]
    assert create.verb == "create" and create.body == builders.build_inference_pool(model, enabled)
    c = condition(result.status, "InferencePool")
    assert c["status"] == "True" and "gaie-epp:9002" in c["message"]
    # once made, nothing more
    again = run(observed(model, enabled, pools_served=True, inference_pool=create.body), enabled)
    assert not [a for a in again.actions if a.resource == "inferencepools"]


def test_a_changed_picker_patches_the_pool(model, enabled):
    old = builders.build_inference_pool(model, replace(enabled, endpoint_picker="old-epp"))
    result = run(observed(model, enabled, pools_served=True, inference_pool=old), enabled)
    [patch] = [a for a in result.actions if a.resource == "inferencepools"]
    assert patch.verb == "patch" and patch.body[0]["value"]["endpointPickerRef"]["name"] == "gaie-epp"


def test_without_the_crd_a_condition_and_one_warning(model, enabled):
    first = run(observed(model, enabled), enabled)
    assert not [a for a in first.actions if a.resource == "inferencepools"]
    c = condition(first.status, "InferencePool")
    assert (c["status"], c["reason"]) == ("False", "CRDNotInstalled") and "inference.networking.k8s.io/v1" in c["message"]
    assert [e[:2] for e in first.events if e[1] == "CRDNotInstalled"] == [("Warning", "CRDNotInstalled")]
    assert first.status["phase"] == "Ready"  # serving goes on
    second_pass = observed(model, enabled)
    model["status"] = first.status
    second = run(second_pass, enabled)
    assert not [e for e in second.events if e[1] == "CRDNotInstalled"]  # said once
    assert condition(second.status, "InferencePool") == c


def test_declined_deletes_its_own_pool_only(model, enabled, settings):
    pool = builders.build_inference_pool(model, enabled)
    result = run(observed(model, settings, pools_served=True, inference_pool=pool), settings)
    assert [(a.verb, a.name) for a in result.actions if a.resource == "inferencepools"] == [("delete", "smollm2-360m")]
    assert not [c for c in result.status.get("conditions") or [] if c["type"] == "InferencePool"]
    pool["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    result = run(observed(model, settings, pools_served=True, inference_pool=pool), settings)
    assert not [a for a in result.actions if a.resource == "inferencepools"]
    result = run(observed(model, enabled, pools_served=True, inference_pool=pool), enabled)
    assert not [a for a in result.actions if a.resource == "inferencepools"]
    assert condition(result.status, "InferencePool")["reason"] == "NameConflict"


def test_a_picker_that_cannot_take_requests_is_said_once_and_the_pool_stays(model, enabled):
    pool = builders.build_inference_pool(model, enabled)
    down = observed(model, enabled, pools_served=True, inference_pool=pool, picker_down="has no ready pod")
    result = run(down, enabled)
    assert not [a for a in result.actions if a.resource == "inferencepools"]  # kept as it is
    c = condition(result.status, "InferencePool")
    assert (c["status"], c["reason"]) == ("False", "PickerUnavailable")
    assert "Service gaie-epp:9002" in c["message"] and "has no ready pod" in c["message"]
    assert [e[:2] for e in result.events if e[0] == "Warning"] == [("Warning", "PickerUnavailable")]
    assert result.status["phase"] == "Ready"  # the pods serve; only the Gateway's door is shut
    model["status"] = result.status  # the next pass reads what this one wrote
    assert not [e for e in run(down, enabled).events if e[1] == "PickerUnavailable"]  # said once
    up = replace(down, picker_down="")
    assert condition(run(up, enabled).status, "InferencePool")["reason"] == "Created"


def test_only_an_older_crd_a_condition_that_names_it(model, enabled):
    result = run(observed(model, enabled, pool_versions=["inference.networking.x-k8s.io/v1alpha2"]), enabled)
    assert not [a for a in result.actions if a.resource == "inferencepools"]
    c = condition(result.status, "InferencePool")
    assert (c["status"], c["reason"]) == ("False", "UnsupportedCRDVersion")
    assert "only as inference.networking.x-k8s.io/v1alpha2" in c["message"]
    assert [e[:2] for e in result.events if e[0] == "Warning"] == [("Warning", "UnsupportedCRDVersion")]
