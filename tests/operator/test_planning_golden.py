"""The plans of a Model's whole life, compared whole: every status field, condition,
event and action of each step. The expectations are in golden_plans.json next to this
file, reviewed by hand; a change in what the operator writes shows as a diff there.
MODELYARD_UPDATE_GOLDEN=1 rewrites it (then review the diff)."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from modelyard.operator import builders
from modelyard.operator.planning import Observed, plan

from .conftest import make_model

GOLDEN = Path(__file__).with_name("golden_plans.json")


def step(model, settings, now, **children):
    result = plan(Observed(model, **children), settings, now=now, api_key="generated-key")
    out = {
        "status": result.status,
        "events": [list(e) for e in result.events],
        "actions": [[a.verb, a.resource, a.name, a.event] + ([a.body] if a.verb == "patch" else [])
                    for a in result.actions],
    }
    model["status"] = copy.deepcopy(result.status)  # what the operator writes back
    return out


def life(settings) -> dict:
    steps = {}
    model = make_model()
    pvc = builders.build_pvc(model, settings)
    steps["new"] = step(model, settings, "t1")
    job = builders.build_download_job(model, settings)
    job["status"] = {"active": 1}
    steps["downloading"] = step(model, settings, "t2", pvc=pvc, job=job)
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    model["status"]["download"] = {"size": 40, "totalSize": 100, "progress": "40%"}
    steps["job-complete"] = step(model, settings, "t3", pvc=pvc, job=job)
    digest = builders.source_hash(model["spec"])
    deployment = builders.build_deployment(model, settings, source_hash=digest)
    service = builders.build_service(model)
    steps["children-made"] = step(model, settings, "t4", pvc=pvc, job=job, deployment=deployment,
                                  service=service)
    deployment["status"] = {"readyReplicas": 1}
    steps["ready"] = step(model, settings, "t5", pvc=pvc, job=job, deployment=deployment, service=service)
    steps["ready-again"] = step(model, settings, "t6", pvc=pvc, job=job, deployment=deployment,
                                service=service)
    model["metadata"]["generation"] = 2
    model["spec"]["replicas"] = 3
    model["spec"]["gguf"] = {"initContextSize": 8192}
    steps["serving-change"] = step(model, settings, "t7", pvc=pvc, job=job, deployment=deployment,
                                   service=service)
    model["metadata"]["generation"] = 3
    model["spec"]["source"] = {"url": "https://example.com/other.gguf"}
    steps["source-change"] = step(model, settings, "t8", pvc=pvc, job=None, stale_jobs=[job],
                                  deployment=deployment, service=service)
    return steps


def failures(settings) -> dict:
    steps = {}
    model = make_model()
    pvc = builders.build_pvc(model, settings)
    job = builders.build_download_job(model, settings)
    job["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                                  "message": "BackoffLimitExceeded"}]}
    model["status"] = {"download": {"size": 5, "totalSize": 10, "progress": "50%"}}
    steps["download-failed"] = step(model, settings, "t1", pvc=pvc, job=job, job_error="404: no such repo")
    steps["download-failed-again"] = step(model, settings, "t2", pvc=pvc, job=job,
                                          job_error="404: no such repo")
    steps["download-failed-otherwise"] = step(model, settings, "t3", pvc=pvc, job=job,
                                              job_error="401: gated repo")
    bad = make_model(source={"url": "https://x/m.gguf", "huggingface": {"repo": "a/b", "file": "m.gguf"}})
    del bad["metadata"]["generation"]
    bad["status"] = {"observedGeneration": 5, "readyReplicas": 2}
    steps["invalid-spec"] = step(bad, settings, "t4")
    other = make_model()
    foreign = builders.build_service(other)
    foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else", "name": "x", "kind": "Thing"}]
    steps["name-conflict"] = step(other, settings, "t5", service=foreign)
    return steps


def test_the_plans_of_a_whole_life(settings):
    got = json.loads(json.dumps({"life": life(settings), "failures": failures(settings)}))
    if os.environ.get("MODELYARD_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    for part in expected:
        for name in expected[part]:
            assert got[part][name] == expected[part][name], f"{part}/{name}"
    assert got.keys() == expected.keys() and all(got[p].keys() == expected[p].keys() for p in got)
