"""The plan in the cases the whole-life golden test does not walk through.

Each test is a situation a cluster really gets into: a Job whose pod is not scheduled
yet, a Deployment whose controller has not caught up with its spec, a Model scaled to
zero, annotations that someone else put on a Deployment, a download that fails twice
for different reasons. They were written against mutation survivors (docs/testing.md).
"""
from modelyard.operator import builders, names
from modelyard.operator.planning import Observed, merge_patch

from .conftest import NOW, condition, make_model, run, serving






# A Job with no pod yet (unschedulable, image pulling, quota): JobPending.

def test_a_job_without_a_pod_yet_is_pending(model, settings):
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)  # as created: no status at all
    for job_status in (None, {}, {"active": 0}, {"conditions": [{"type": "Failed", "status": "False"}]}):
        if job_status is None:
            job.pop("status", None)
        else:
            job["status"] = job_status
        result = run(Observed(model, pvc=pvc, job=job), settings)
        assert result.actions == [], job_status  # the Job exists: nothing to create or delete
        assert result.status["phase"] == "Pending", job_status
        job_name = job["metadata"]["name"]
        assert condition(result.status, "Downloaded") == {
            "type": "Downloaded", "status": "False", "reason": "JobPending",
            "message": f"Job {job_name} is waiting for its pod.",
            "lastTransitionTime": NOW, "observedGeneration": 1}
        assert condition(result.status, "Ready") == {
            "type": "Ready", "status": "False", "reason": "JobPending",
            "message": "The model is not downloaded yet.",
            "lastTransitionTime": NOW, "observedGeneration": 1}
        assert result.events == [("Normal", "JobPending", f"Job {job_name} is waiting for its pod.")]


def test_a_pending_job_that_starts_says_downloading(model, settings):
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    first = run(Observed(model, pvc=pvc, job=job), settings)
    model["status"] = first.status
    job["status"] = {"active": 1}
    second = run(Observed(model, pvc=pvc, job=job), settings, now="2025-01-01T00:01:00Z")
    assert second.status["phase"] == "Downloading"
    assert condition(second.status, "Downloaded")["reason"] == "Downloading"
    # Still not downloaded: the condition keeps the time it became False.
    assert condition(second.status, "Downloaded")["lastTransitionTime"] == NOW
    assert second.events == [("Normal", "Downloading", f"Job {job['metadata']['name']} is downloading.")]


def test_events_only_when_the_phase_changes(model, settings):
    """Pending for a new reason (JobCreated, then JobPending) is not a new Event: at a few
    hundred Models every Event is a write to the API server."""
    pvc = builders.build_pvc(model, settings)
    created = run(Observed(model, pvc=pvc), settings)
    assert created.status["phase"] == "Pending"
    assert condition(created.status, "Ready")["reason"] == "JobCreated"
    model["status"] = created.status
    job = builders.build_download_job(model, settings)
    pending = run(Observed(model, pvc=pvc, job=job), settings)
    assert pending.status["phase"] == "Pending"
    assert condition(pending.status, "Ready")["reason"] == "JobPending"
    assert pending.events == []


# A Deployment whose controller has not yet seen its newest spec.

def test_ready_pods_of_an_older_generation_are_not_ready(model, settings):
    observed = serving(model, settings)
    deployment = observed.deployment
    deployment["metadata"]["generation"] = 4
    deployment["status"] = {"readyReplicas": 1, "observedGeneration": 3}
    result = run(observed, settings)
    assert result.status["phase"] == "Loading"  # the ready pod may be an old one
    assert condition(result.status, "Ready")["reason"] == "Loading"
    assert result.status["readyReplicas"] == 1
    # Once the controller has caught up, the same ready pod serves.
    for seen in (4, 5):
        deployment["status"]["observedGeneration"] = seen
        result = run(observed, settings)
        assert result.status["phase"] == "Ready", seen
        assert condition(result.status, "Ready")["message"] == \
            "1 pod(s) serve the model at http://smollm2-360m.ai.svc:8083."


def test_a_deployment_without_generations_is_judged_by_its_pods(model, settings):
    observed = serving(model, settings)
    deployment = observed.deployment
    deployment["metadata"].pop("generation", None)
    deployment["status"] = {"readyReplicas": 2, "observedGeneration": 7}
    assert run(observed, settings).status["phase"] == "Ready"
    deployment["metadata"]["generation"] = 7
    deployment["status"] = {"readyReplicas": 2}
    result = run(observed, settings)
    assert result.status["phase"] == "Ready"
    assert result.status["readyReplicas"] == 2


def test_ready_pods_of_the_previous_file_are_not_ready(model, settings):
    """The Deployment's pods still load the old source: Loading, and the pods roll."""
    observed = serving(model, settings)
    old = builders.build_deployment(model, settings, source_hash="0ld50urce0")
    old["status"] = {"readyReplicas": 1}
    observed.deployment = old
    result = run(observed, settings)
    assert result.status["phase"] == "Loading"
    patch = next(a for a in result.actions if a.verb == "patch")
    template = next(op["value"] for op in patch.body if op["path"] == "/spec/template")
    assert template["metadata"]["annotations"][names.ANNOTATION_SOURCE_HASH] == \
        builders.source_hash(model["spec"])
    # A template without annotations (made by hand, or by an old operator) serves nothing known.
    del old["spec"]["template"]["metadata"]["annotations"]
    assert run(observed, settings).status["phase"] == "Loading"
    del old["spec"]["template"]["metadata"]
    assert run(observed, settings).status["phase"] == "Loading"


# Scaling to zero, and the default of one replica.

def test_a_model_without_replicas_serves_with_one(settings):
    model = make_model()
    del model["spec"]["replicas"]
    result = run(serving(model, settings), settings)
    assert result.actions == []  # the Deployment built with the default needs no patch
    assert result.status["phase"] == "Ready"
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    model.pop("status")
    fresh = run(Observed(model, pvc=pvc, job=job), settings)
    deployment = next(a.body for a in fresh.actions if a.resource == "deployments")
    assert deployment["spec"]["replicas"] == 1


def test_scaling_to_zero_and_back(model, settings):
    observed = serving(model, settings)
    model["spec"]["replicas"] = 0
    down = run(observed, settings)
    [action] = down.actions
    assert (action.verb, action.resource) == ("patch", "deployments")
    assert action.body == [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    assert action.event == "Scaled the inference pods to 0"
    # The pod still running while it stops does not make the Model ready.
    assert down.status["phase"] == "Pending"
    message = "spec.replicas is 0: the model stays in the cache and nothing serves it (kubectl scale to serve)."
    assert condition(down.status, "Ready") == {
        "type": "Ready", "status": "False", "reason": "ScaledToZero", "message": message,
        "lastTransitionTime": NOW, "observedGeneration": 1}
    assert down.events == [("Normal", "ScaledToZero", message)]
    model["status"] = down.status
    observed.deployment["spec"]["replicas"] = 0
    observed.deployment["status"] = {}
    stopped = run(observed, settings)
    assert stopped.actions == [] and stopped.status["replicas"] == 0
    model["spec"]["replicas"] = 2
    [up] = run(observed, settings).actions
    assert up.body == [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    assert up.event == "Scaled the inference pods to 2"


def test_scaled_to_zero_by_the_autoscaler_says_the_router_wakes_it(model, settings):
    model["spec"].update(replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2})
    result = run(serving(model, settings, ready=0), settings)
    assert result.status["phase"] == "Pending"
    ready = condition(result.status, "Ready")
    assert ready["reason"] == "ScaledToZero" and "router scales it back to one pod" in ready["message"]


def test_the_status_carries_the_scale_subresource_fields(model, settings):
    """status.replicas (pods that exist) and status.selector (a string that finds them),
    from the first status on: an HPA reads both through the scale subresource."""
    pending = run(Observed(model), settings)
    assert pending.status["replicas"] == 0
    assert pending.status["selector"] == "app.kubernetes.io/component=server,modelyard.dev/model=smollm2-360m"
    observed = serving(model, settings)
    observed.deployment["status"] = {"replicas": 3, "readyReplicas": 2}
    status = run(observed, settings).status
    assert (status["replicas"], status["readyReplicas"]) == (3, 2)
    labels = observed.deployment["spec"]["template"]["metadata"]["labels"]
    assert dict(term.split("=") for term in status["selector"].split(",")).items() <= labels.items()


def test_a_new_source_scales_any_serving_deployment_to_zero(model, settings):
    observed = serving(model, settings)
    model["spec"]["source"] = {"url": "https://example.com/other.gguf"}
    for replicas in (1, 3):
        observed.deployment["spec"]["replicas"] = replicas
        result = run(observed, settings)
        scale = [a for a in result.actions if a.resource == "deployments"]
        assert [a.body for a in scale] == [[{"op": "replace", "path": "/spec/replicas", "value": 0}]], replicas
        assert scale[0].event == "Scaled the inference pods to 0 while the new source downloads"
        assert scale[0].name == observed.deployment["metadata"]["name"]
    observed.deployment["spec"]["replicas"] = 0
    assert [a.resource for a in run(observed, settings).actions] == ["jobs"]


# The Deployment's annotations belong partly to others.

def test_a_roll_keeps_the_annotations_others_wrote(model, settings):
    observed = serving(model, settings)
    observed.deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "7"
    observed.deployment["metadata"]["annotations"]["team.example.com/owner"] = "ml"
    model["spec"]["gguf"]["initContextSize"] = 8192
    patch = next(a for a in run(observed, settings).actions if a.verb == "patch")
    desired = builders.build_deployment(model, settings, source_hash=builders.source_hash(model["spec"]))
    annotations = next(op for op in patch.body if op["path"] == "/metadata/annotations")
    assert annotations["op"] == "add"  # add replaces the whole map, and works when there is none
    assert annotations["value"] == {
        "deployment.kubernetes.io/revision": "7",
        "team.example.com/owner": "ml",
        names.ANNOTATION_POD_SPEC_HASH: desired["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH],
    }
    strategy = next(op for op in patch.body if op["path"] == "/spec/strategy")
    assert strategy == {"op": "replace", "path": "/spec/strategy", "value": desired["spec"]["strategy"]}


def test_a_deployment_without_annotations_is_rolled_and_annotated(model, settings):
    observed = serving(model, settings)
    del observed.deployment["metadata"]["annotations"]
    result = run(observed, settings)
    patch = next(a for a in result.actions if a.verb == "patch")
    assert patch.event == "Rolling the inference pods to a new pod spec"
    desired = builders.build_deployment(model, settings, source_hash=builders.source_hash(model["spec"]))
    assert {"op": "add", "path": "/metadata/annotations", "value": desired["metadata"]["annotations"]} \
        in patch.body
    assert {"op": "replace", "path": "/spec/template", "value": desired["spec"]["template"]} in patch.body
    # The new template may be the first to use the generated key: it is ensured again.
    assert [(a.verb, a.resource) for a in result.actions] == [("create", "secrets"), ("patch", "deployments")]


# Failures.

def test_a_second_failure_for_another_reason_is_a_new_warning(model, settings):
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    job["status"] = {"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]}
    model["status"] = {"phase": "Failed", "conditions": [
        {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "Fix the spec: x."}]}
    result = run(Observed(model, pvc=pvc, job=job, job_error="401: gated repo"), settings)
    assert [e[:2] for e in result.events] == [("Warning", "DownloadFailed")]
    # The same failure again is no new Event.
    model["status"] = result.status
    again = run(Observed(model, pvc=pvc, job=job, job_error="401: gated repo"), settings)
    assert again.events == []
    assert again.status["phase"] == "Failed"


def test_a_failed_job_without_a_message_still_says_what_to_do(model, settings):
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    job_name = job["metadata"]["name"]
    model["status"] = {"sourceHash": builders.source_hash(model["spec"]),
                       "download": {"size": 5, "totalSize": 10, "progress": "50%"}}
    for conditions in ([{"type": "Failed", "status": "True"}],
                       [{"type": "Failed", "status": "True", "message": ""}]):
        job["status"] = {"failed": 1, "conditions": conditions}
        result = run(Observed(model, pvc=pvc, job=job), settings)
        message = (f"Download Job {job_name} failed: the Job failed. Fix spec.source (or its token Secret), "
                   f"or delete Job {job_name} to retry.")
        assert result.status["phase"] == "Failed"
        for kind in ("Downloaded", "Ready"):
            assert condition(result.status, kind)["reason"] == "DownloadFailed"
            assert condition(result.status, kind)["message"] == message
        assert result.events == [("Warning", "DownloadFailed", message)]
        assert result.status["download"] == {"size": 5, "totalSize": 10}  # no PROGRESS on a failure
        assert result.actions == []


def test_a_failure_that_is_not_the_download_keeps_the_download_condition(model, settings):
    observed = serving(model, settings)
    model["spec"]["replicas"] = -1
    result = run(observed, settings)
    assert result.status["phase"] == "Failed"
    assert condition(result.status, "Ready")["reason"] == "InvalidSpec"
    assert condition(result.status, "Downloaded")["status"] == "True"  # the file is still there


# The status patch the operator writes.

def test_merge_patch_of_values_that_are_not_objects():
    assert merge_patch(1, 1) is None
    assert merge_patch("Ready", "Failed") == "Failed"
    assert merge_patch([1], [1, 2]) == [1, 2]
    assert merge_patch({"a": 1}, [1]) == [1]
    assert merge_patch([1], {"a": 1}) == {"a": 1}
    assert merge_patch(None, {"a": 1}) == {"a": 1}
    assert merge_patch({"a": 1}, {"a": 1}) is None
    # A field that changes type is replaced whole; an object in an object is patched.
    assert merge_patch({"download": 5}, {"download": {"size": 1}}) == {"download": {"size": 1}}
    assert merge_patch({"download": {"size": 1}}, {"download": 5}) == {"download": 5}
    assert merge_patch({"download": {"size": 1, "progress": "1%"}}, {"download": {"size": 2}}) == \
        {"download": {"size": 2, "progress": None}}
    assert merge_patch({"conditions": [{"a": 1}]}, {"conditions": [{"a": 2}]}) == {"conditions": [{"a": 2}]}
    assert merge_patch({"phase": "Ready", "x": None}, {"phase": "Ready", "x": None}) is None


# What the status says, in cases the other tests leave out.

def test_every_problem_of_a_spec_is_listed(settings):
    model = make_model(kind="nope", sha256="xyz")
    message = condition(run(Observed(model), settings).status, "Ready")["message"]
    assert message.startswith("Fix the spec: spec.kind must be one of ")
    assert "; spec.sha256 must be 64 hexadecimal characters." in message
    assert message.count("; ") == 1


def test_the_endpoint_shows_while_a_new_source_downloads(model, settings):
    """A status written before the endpoint was known (or by an older operator) gets it
    as soon as the Service is there, even while a new source downloads."""
    observed = serving(model, settings)
    model["spec"]["source"] = {"url": "https://example.com/other.gguf"}
    model["status"] = {"sourceHash": "old", "phase": "Ready"}
    status = run(observed, settings).status
    assert status["endpoint"] == "http://smollm2-360m.ai.svc:8083"
    assert status["apiKeySecretRef"] == {"name": "smollm2-360m-api-key", "key": "key"}
    assert status["readyReplicas"] == 1


def test_a_model_with_its_own_key_gets_no_generated_secret(model, settings):
    model["spec"]["apiKeySecretRef"] = {"name": "team-key", "key": "api"}
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    result = run(Observed(model, pvc=pvc, job=job), settings)
    assert [(a.verb, a.resource) for a in result.actions] == [("create", "services"), ("create", "deployments")]
    assert result.status["apiKeySecretRef"] == {"name": "team-key", "key": "api"}
    # Nor with a new pod template.
    observed = serving(model, settings)
    model["spec"]["gguf"]["initContextSize"] = 8192
    assert [(a.verb, a.resource) for a in run(observed, settings).actions] == [("patch", "deployments")]


def test_a_foreign_child_read_from_a_list_is_still_named(model, settings):
    """Items of a list come without kind: the message still names the object."""
    service = builders.build_service(model)
    service["metadata"]["ownerReferences"][0]["uid"] = "another-model"
    del service["kind"]
    message = condition(run(Observed(model, service=service), settings).status, "Ready")["message"]
    assert message.startswith("object smollm2-360m exists and belongs to something else. "
                              "Rename this Model or remove that object")


def test_a_body_without_a_generation_has_generation_zero(settings):
    """The CRD says observedGeneration is an integer: without metadata.generation (and no
    earlier status) it is 0, never null or a generation that was not seen."""
    model = make_model()
    del model["metadata"]["generation"]
    status = run(Observed(model), settings).status
    assert status["observedGeneration"] == 0
    assert {c["observedGeneration"] for c in status["conditions"]} == {0}
