"""The real operator process against KMock: the whole life of a Model.

The test is the API server's missing half: it creates pods for Jobs, serves their
logs, and marks Jobs and Deployments done or ready, as the controllers would.
"""
import json

import kmock

import pytest

from modelyard.operator import builders, names

from .conftest import make_model
from .kmock_cluster import NAMESPACE, Emulator, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
NAME = "smollm2-360m"


def condition(model, kind):
    return next((c for c in (model.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


async def status_of(kubectl, name=NAME):
    return ((await kubectl.get("models", name)) or {}).get("status") or {}


async def phase(kubectl, wanted, name=NAME):
    async def check():
        status = await status_of(kubectl, name)
        return status if status.get("phase") == wanted else None
    return await eventually(check, what=f"phase {wanted}")


async def the_only_job(kubectl):
    jobs = await eventually(lambda: kubectl.list("jobs"), what="a Job")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return jobs[0]


async def test_the_life_of_a_model(operator, kubectl):
    model = await kubectl.create("models", make_model())
    uid = model["metadata"]["uid"]

    # 1. The cache PVC and the download Job appear.
    pvc = await eventually(lambda: kubectl.get("persistentvolumeclaims", f"{NAME}-cache"), what="the PVC")
    job = await the_only_job(kubectl)
    digest = builders.source_hash(model["spec"])
    assert job["metadata"]["name"] == f"{NAME}-fetch-{digest}"
    for child in (pvc, job):
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    fetch = job["spec"]["template"]["spec"]["containers"][0]
    assert fetch["command"][:3] == ["modelyard", "fetch", "hf://HuggingFaceTB/SmolLM2-360M-Instruct-GGUF/"
                                    "smollm2-360m-instruct-q8_0.gguf"]
    await phase(kubectl, "Pending")

    # The fetch pod runs and prints its progress: status.download follows the log.
    pod = await kubectl.start_pod_of(job, log='{"size": 1000, "totalSize": 4000}\n')
    await phase(kubectl, "Downloading")
    kubectl.logs[pod] += b'{"size": 3000, "totalSize": 4000}\n{"mmproj": {"size": 1, "totalSize": 9}}\n'

    async def progress_75():
        download = (await status_of(kubectl)).get("download") or {}
        return download if download.get("progress") == "75%" else None
    assert await eventually(progress_75, what="75%") == {"size": 3000, "totalSize": 4000, "progress": "75%"}
    assert await kubectl.get("deployments", NAME) is None  # nothing serves before the file is complete

    # 2. The Job succeeds: the Deployment, the Service and the API-key Secret appear.
    await kubectl.finish_job(job["metadata"]["name"])
    deployment = await eventually(lambda: kubectl.get("deployments", NAME), what="the Deployment")
    service = await eventually(lambda: kubectl.get("services", NAME), what="the Service")
    secret = await eventually(lambda: kubectl.get("secrets", f"{NAME}-api-key"), what="the Secret")
    assert len(secret["stringData"]["key"]) >= 32
    pod_spec = deployment["spec"]["template"]["spec"]
    server = pod_spec["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "cache", "mountPath": "/cache", "readOnly": True} in server["volumeMounts"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 3600
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "MODELYARD_API_KEY", "valueFrom": {"secretKeyRef": {"name": f"{NAME}-api-key", "key": "key"}}} \
        in server["env"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for child in (deployment, service, secret):
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    loading = await phase(kubectl, "Loading")
    assert loading["download"] == {"size": 4000, "totalSize": 4000}
    assert condition({"status": loading}, "Downloaded")["status"] == "True"

    # 3. A pod becomes ready: the Model is Ready, with its endpoint.
    await kubectl.patch("deployments", NAME, {"status": {"readyReplicas": 1, "replicas": 1}}, sub="status")
    ready = await phase(kubectl, "Ready")
    assert ready["endpoint"] == f"http://{NAME}.{NAMESPACE}.svc:8083"
    assert ready["readyReplicas"] == 1
    assert ready["observedGeneration"] == 1
    assert condition({"status": ready}, "Ready")["status"] == "True"
    reasons = {e["reason"] for e in await kubectl.events() if e["involvedObject"]["name"] == NAME}
    assert {"JobCreated", "Loading", "Ready"} <= reasons

    # 4a. A serving field changes: the pod-spec hash changes and the Deployment rolls.
    old_hash = deployment["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH]
    await kubectl.change_spec(NAME, {"gguf": {"initContextSize": 8192, "kvCacheType": "q8_0"}, "replicas": 2})

    async def rolled():
        current = await kubectl.get("deployments", NAME)
        return current if current["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH] != old_hash else None
    rolled_out = await eventually(rolled, what="a new pod-spec hash")
    assert rolled_out["spec"]["replicas"] == 2
    assert {"name": "MODELYARD_INIT_CONTEXT_SIZE", "value": "8192"} in \
        rolled_out["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELYARD_KV_CACHE_TYPE", "value": "q8_0"} in \
        rolled_out["spec"]["template"]["spec"]["containers"][0]["env"]
    # The Deployment is patched before the Model's status in the same pass: wait for both.
    async def observed():
        status = await status_of(kubectl)
        return status if status.get("observedGeneration") == 2 else None
    assert (await eventually(observed, what="observedGeneration 2"))["observedGeneration"] == 2
    assert len(await kubectl.list("jobs")) == 1  # serving fields never download again

    # 4b. The source changes: the pods stop, the old Job goes, a new Job downloads.
    await kubectl.change_spec(NAME, {"source": {"url": "https://example.com/smollm2-q4.gguf", "huggingface": None}})

    async def new_job():
        jobs = await kubectl.list("jobs")
        return jobs if [j["metadata"]["name"] for j in jobs] != [job["metadata"]["name"]] and jobs else None
    [second] = await eventually(new_job, what="the new source's Job")
    assert second["spec"]["template"]["spec"]["containers"][0]["command"][2] == "https://example.com/smollm2-q4.gguf"
    assert (await kubectl.get("deployments", NAME))["spec"]["replicas"] == 0
    status = await status_of(kubectl)
    assert status["phase"] in ("Pending", "Downloading")
    assert condition({"status": status}, "Downloaded")["status"] == "False"
    await kubectl.finish_job(second["metadata"]["name"])

    async def serving_again():
        current = await kubectl.get("deployments", NAME)
        return current if current["spec"]["replicas"] == 2 else None
    again = await eventually(serving_again, what="the pods back on the new file")
    new_digest = builders.source_hash((await kubectl.get("models", NAME))["spec"])
    assert again["spec"]["template"]["metadata"]["annotations"]["modelyard.dev/source-hash"] == new_digest

    # 4c. Delete: KMock does not collect garbage, so check what the collector follows.
    await kubectl.delete("models", NAME)
    for resource, name in [("persistentvolumeclaims", f"{NAME}-cache"), ("deployments", NAME),
                           ("services", NAME), ("secrets", f"{NAME}-api-key"),
                           ("jobs", second["metadata"]["name"])]:
        child = await kubectl.get(resource, name)
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "name": NAME, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}], resource
    assert await kubectl.get("models", NAME) is None  # no finalizer held the Model back


async def test_a_restart_converges_without_a_second_job(operator, kubectl):
    await kubectl.create("models", make_model())
    job = await the_only_job(kubectl)
    await phase(kubectl, "Pending")

    # A crash, then a restart: the Job is found, not made again.
    operator.kill()
    await kubectl.start_pod_of(job, log='{"size": 5, "totalSize": 10}\n')
    operator.start()
    await phase(kubectl, "Downloading")
    assert [j["metadata"]["name"] for j in await kubectl.list("jobs")] == [job["metadata"]["name"]]

    # A crash between creating the Job and writing the status: the new operator finds
    # a Model with no status at all, and the Job that the previous one made.
    operator.kill()
    await kubectl.patch("models", NAME, {"status": None}, sub="status")
    assert await status_of(kubectl) == {}
    operator.start()
    await phase(kubectl, "Downloading")
    await kubectl.finish_job(job["metadata"]["name"])
    await phase(kubectl, "Loading")
    operator.kill()
    operator.start()
    await kubectl.patch("deployments", NAME, {"status": {"readyReplicas": 1}}, sub="status")
    await phase(kubectl, "Ready")
    assert [j["metadata"]["name"] for j in await kubectl.list("jobs")] == [job["metadata"]["name"]]
    assert len(await kubectl.list("deployments")) == 1
    creations = [r for r in kubectl.server if r.action == kmock.action.CREATE and r.resource is not None
                 and r.resource.plural == "jobs"]
    assert len(creations) == 1


async def test_a_failed_download_says_what_to_fix(operator, kubectl):
    await kubectl.create("models", make_model())
    job = await the_only_job(kubectl)
    error = {"error": {"code": 404, "message": "Repository HuggingFaceTB/SmolLM2-360M-Instruct-GGUF not found"}}
    await kubectl.start_pod_of(job, log='{"size": 0, "totalSize": 10}\n' + json.dumps(error) + "\n")
    await kubectl.finish_job(job["metadata"]["name"], ok=False, message="Job has reached the specified backoff limit")
    failed = await phase(kubectl, "Failed")
    ready = condition({"status": failed}, "Ready")
    assert ready["reason"] == "DownloadFailed"
    assert "Repository HuggingFaceTB/SmolLM2-360M-Instruct-GGUF not found" in ready["message"]
    assert "Fix spec.source" in ready["message"]
    assert "progress" not in failed.get("download", {})

    async def warning():
        return [e for e in await kubectl.events() if e["type"] == "Warning" and e["reason"] == "DownloadFailed"]
    assert "not found" in (await eventually(warning, what="a Warning event"))[0]["message"]
    assert await kubectl.get("deployments", NAME) is None

    # Deleting the failed Job retries the download.
    await kubectl.delete("jobs", job["metadata"]["name"])
    await eventually(lambda: kubectl.get("jobs", job["metadata"]["name"]), what="the retried Job")
    await phase(kubectl, "Pending")


async def test_an_invalid_spec_fails_without_children(operator, kubectl):
    bad = make_model(source={"url": "https://example.com/m.gguf",
                             "huggingface": {"repo": "a/b", "file": "m.gguf"}})
    await kubectl.create("models", bad)
    failed = await phase(kubectl, "Failed")
    ready = condition({"status": failed}, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "set exactly one of huggingface or url" in ready["message"]
    assert await kubectl.list("jobs") == []
    assert await kubectl.list("persistentvolumeclaims") == []

    # Fixing the spec recovers.
    await kubectl.change_spec(NAME, {"source": {"huggingface": None}})
    await eventually(lambda: kubectl.list("jobs"), what="a Job after the fix")
    await phase(kubectl, "Pending")
