"""The plan, as a pure function of what was observed."""
from modelyard.operator import builders
from modelyard.operator.planning import Observed, merge_patch
from modelyard.operator.progress import download_status, last_events

from .conftest import condition, make_model, run, serving




def verbs(result):
    return [(a.verb, a.resource) for a in result.actions]



def complete(job):
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    return job


def test_a_new_model_gets_a_cache_and_a_job(model, settings):
    result = run(Observed(model), settings)
    assert verbs(result) == [("create", "persistentvolumeclaims"), ("create", "jobs")]
    assert result.status["phase"] == "Pending"
    assert result.status["sourceHash"] == builders.source_hash(model["spec"])
    assert result.status["observedGeneration"] == 1
    assert condition(result.status, "Downloaded")["status"] == "False"
    assert result.events == [("Normal", "JobCreated", result.status["conditions"][0]["message"])]


def test_an_active_job_is_downloading(model, settings):
    job = builders.build_download_job(model, settings)
    job["status"] = {"active": 1}
    pvc = builders.build_pvc(model, settings)
    result = run(Observed(model, pvc=pvc, job=job), settings)
    assert result.actions == []
    assert result.status["phase"] == "Downloading"


def test_a_complete_job_brings_the_serving_children(model, settings):
    pvc = builders.build_pvc(model, settings)
    job = complete(builders.build_download_job(model, settings))
    model["status"] = {"download": {"size": 10, "totalSize": 100, "progress": "10%"}}
    result = run(Observed(model, pvc=pvc, job=job), settings)
    assert verbs(result) == [("create", "secrets"), ("create", "services"), ("create", "deployments")]
    secret = result.actions[0].body
    assert secret["stringData"] == {"key": "generated-key"}
    assert result.status["phase"] == "Loading"
    assert result.status["endpoint"] == "http://smollm2-360m.ai.svc:8083"
    assert result.status["download"] == {"size": 100, "totalSize": 100}  # no PROGRESS once done
    assert condition(result.status, "Downloaded")["status"] == "True"



def test_a_ready_pod_makes_the_model_ready(model, settings):
    result = run(serving(model, settings), settings)
    assert result.actions == []  # the Job is gone, but the cache is known complete
    assert result.status["phase"] == "Ready"
    assert result.status["readyReplicas"] == 1
    assert condition(result.status, "Ready")["status"] == "True"
    # The condition that did not change keeps its time.
    assert condition(result.status, "Downloaded")["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert ("Normal", "Ready") in [e[:2] for e in result.events]


def test_a_second_pass_changes_nothing(model, settings):
    observed = serving(model, settings)
    first = run(observed, settings)
    model["status"] = first.status
    second = run(observed, settings, now="2030-01-01T00:00:00Z")
    assert second.actions == [] and second.events == []
    assert merge_patch(first.status, second.status) is None


def test_serving_fields_roll_the_deployment(model, settings):
    observed = serving(model, settings)
    model["spec"]["gguf"]["initContextSize"] = 8192
    model["spec"]["replicas"] = 2
    result = run(observed, settings)
    secret, action = result.actions  # the generated key is ensured with each new template
    assert (secret.verb, secret.resource) == ("create", "secrets")
    assert (action.verb, action.resource) == ("patch", "deployments")
    assert action.event == "Rolling the inference pods to a new pod spec"
    paths = {op["path"]: op["value"] for op in action.body}
    assert paths["/spec/replicas"] == 2
    env = paths["/spec/template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELYARD_INIT_CONTEXT_SIZE", "value": "8192"} in env


def test_scaling_does_not_roll(model, settings):
    observed = serving(model, settings)
    model["spec"]["replicas"] = 3
    [action] = run(observed, settings).actions
    assert action.body == [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    assert action.event == "Scaled the inference pods to 3"


def test_a_new_source_stops_the_pods_and_the_old_job(model, settings):
    observed = serving(model, settings)
    old_job = complete(builders.build_download_job(model, settings))
    model["spec"]["source"] = {"url": "https://example.com/other.gguf"}
    observed.stale_jobs = [old_job]
    result = run(observed, settings)
    assert verbs(result) == [("patch", "deployments"), ("delete", "jobs")]
    assert result.actions[0].body == [{"op": "replace", "path": "/spec/replicas", "value": 0}]
    assert result.status["phase"] == "Pending"
    assert condition(result.status, "Downloaded")["reason"] == "SourceChanged"
    # Once the old Job is gone, the new one is made.
    model["status"] = result.status
    observed.stale_jobs = []
    observed.deployment["spec"]["replicas"] = 0
    result = run(observed, settings)
    assert verbs(result) == [("create", "jobs")]
    assert result.actions[0].body["spec"]["template"]["spec"]["containers"][0]["command"][2] == \
        "https://example.com/other.gguf"


def test_a_failed_job_says_what_to_fix(model, settings):
    job = builders.build_download_job(model, settings)
    job["status"] = {"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                  "message": "Job has reached the specified backoff limit"}]}
    observed = Observed(model, pvc=builders.build_pvc(model, settings), job=job,
                        job_error="Repository not found: HuggingFaceTB/nope")
    result = run(observed, settings)
    assert result.status["phase"] == "Failed"
    ready = condition(result.status, "Ready")
    assert ready["reason"] == "DownloadFailed"
    assert "Repository not found" in ready["message"] and "Fix spec.source" in ready["message"]
    assert result.events[0][:2] == ("Warning", "DownloadFailed")
    observed.job_error = None
    assert "backoff limit" in condition(run(observed, settings).status, "Ready")["message"]


def test_an_invalid_spec_fails_without_children(settings):
    model = make_model(source={})
    result = run(Observed(model), settings)
    assert result.actions == []
    assert result.status["phase"] == "Failed"
    assert condition(result.status, "Ready")["reason"] == "InvalidSpec"
    assert "exactly one of huggingface or url" in condition(result.status, "Ready")["message"]


def test_children_of_someone_else_are_not_taken(model, settings):
    service = builders.build_service(model)
    service["metadata"]["ownerReferences"][0]["uid"] = "another-model"
    result = run(Observed(model, service=service), settings)
    assert result.actions == []
    assert condition(result.status, "Ready")["reason"] == "NameConflict"


def test_zero_replicas_is_not_ready(model, settings):
    model["spec"]["replicas"] = 0
    result = run(serving(model, settings, ready=0), settings)
    assert result.status["phase"] == "Pending"
    assert condition(result.status, "Ready")["reason"] == "ScaledToZero"


def test_merge_patch_removes_and_replaces():
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}, "e": [1]}) == \
        {"a": None, "b": {"d": None}, "e": [1]}
    assert merge_patch({"a": [1]}, {"a": [1]}) is None


def test_reading_the_fetch_log():
    log = "\n".join([
        '{"size": 10, "totalSize": 1000}',
        '{"size": 500, "totalSize": 1000}',
        '{"mmproj": {"size": 5, "totalSize": 50}}',
        "Traceback (most recent call last):",
        '{"error": {"code": 404, "message": "Repository not found"}}',
    ])
    found = last_events(log)
    assert found == {"progress": {"size": 500, "totalSize": 1000}, "error": "Repository not found"}
    assert download_status(found["progress"]) == {"size": 500, "totalSize": 1000, "progress": "50%"}
    assert download_status({"size": 7, "totalSize": None}) == {"size": 7}
    assert last_events('{"size": 1') == {}
