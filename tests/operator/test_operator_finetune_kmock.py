"""The real operator process against KMock: the life of a FineTune.

The test plays the Job controller and the kubelet (a trainer pod and its log, the Job's
conditions) and the base Model's download; the operator turns the FineTune into its trainer
Job, follows the trainer's log into the status, and posts Events for what went wrong.
"""
import json

import pytest

from modelyard.operator import names

from .conftest import make_model
from .kmock_cluster import Emulator, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
BASE = "smollm2-360m"


def finetune(name, **spec):
    return {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": name},
            "spec": {"baseModel": BASE, "dataset": {"path": "datasets/sql.jsonl"},
                     "hyperparameters": {"loraRank": 16, "learningRate": 0.0002, "epochs": 2},
                     "resources": {"gpu": 1, "limits": {"memory": "24Gi"}}, **spec}}


async def status_where(kubectl, name, what, check):
    async def read():
        status = ((await kubectl.get("finetunes", name)) or {}).get("status") or {}
        return status if check(status) else None
    return await eventually(read, what=what)


async def event(kubectl, name, reason):
    async def find():
        return next((e for e in await kubectl.events() if e["involvedObject"]["name"] == name
                     and e["involvedObject"]["kind"] == "FineTune" and e["reason"] == reason), None)
    return await eventually(find, what=f"event {reason} about {name}")


def step_line(step, total, loss):
    return json.dumps({"step": step, "totalSteps": total, "epoch": 1, "loss": loss}) + "\n"


async def test_the_life_of_a_finetune(operator, kubectl):
    # 1. No base Model yet: Pending, and a Warning that names it.
    ft = await kubectl.create("finetunes", finetune("sql-lora"))
    status = await status_where(kubectl, "sql-lora", "BaseModelNotFound",
                                lambda s: s.get("conditions", [{}])[0].get("reason") == "BaseModelNotFound")
    assert status["phase"] == "Pending" and status["adapter"] == "sql-lora"
    warning = await event(kubectl, "sql-lora", "BaseModelNotFound")
    assert warning["type"] == "Warning" and BASE in warning["message"]

    # 2. The base appears and downloads: Pending with BaseNotReady, then the trainer Job once
    # the base's file is complete.
    await kubectl.create("models", make_model())
    await status_where(kubectl, "sql-lora", "BaseNotReady",
                       lambda s: s.get("conditions", [{}])[0].get("reason") == "BaseNotReady")
    await event(kubectl, "sql-lora", "BaseNotReady")
    fetch = await eventually(lambda: _job(kubectl, "download"), what="the download Job")
    assert await kubectl.get("jobs", names.trainer_job_name("sql-lora")) is None
    await kubectl.finish_job(fetch["metadata"]["name"])
    job = await eventually(lambda: kubectl.get("jobs", "sql-lora-train"), what="the trainer Job")

    # The Job: owned by the FineTune, the trainer image, the base's cache writable, a GPU and
    # the GPU placement the Model's pods get.
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTune", ft["metadata"]["uid"], True)
    pod = job["spec"]["template"]["spec"]
    [train] = pod["containers"]
    assert train["image"] == "ghcr.io/modelyard/modelyard-trainer:0.1.0"
    assert train["command"] == ["modelyard", "train", "--store", "/cache", "--base", BASE, "--adapter", "sql-lora",
                                "--dataset", "/cache/datasets/sql.jsonl", "--epochs", "2",
                                "--learning-rate", "0.0002", "--lora-rank", "16"]
    assert train["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": "1"}
    assert {"name": "cache", "mountPath": "/cache", "readOnly": False} in train["volumeMounts"]
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": f"{BASE}-cache"}} in pod["volumes"]
    deployment = await eventually(lambda: kubectl.get("deployments", BASE), what="the base's Deployment")
    assert pod["tolerations"] == deployment["spec"]["template"]["spec"]["tolerations"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"

    # 3. The trainer runs: its log's last step is the status.
    trainer = await kubectl.start_pod_of(job, log=step_line(1, 8, 2.5))
    status = await status_where(kubectl, "sql-lora", "Running", lambda s: s.get("phase") == "Running")
    kubectl.logs[trainer] += (step_line(2, 8, 2.25) + "not json\n").encode()
    status = await status_where(kubectl, "sql-lora", "step 2", lambda s: s.get("step") == 2)
    assert (status["totalSteps"], status["progress"], status["loss"], status["epoch"]) == (8, "25%", 2.25, 1)

    # A second FineTune on the same base queues: one trainer writes into a base's cache at a time.
    await kubectl.create("finetunes", finetune("bad-lora", adapterName="bad", resources={}))
    await status_where(kubectl, "bad-lora", "Queued", lambda s: s.get("conditions", [{}])[0].get("reason") == "Queued")
    assert await kubectl.get("jobs", "bad-lora-train") is None

    # 4. The Job completes: Succeeded, 100%.
    await kubectl.finish_job("sql-lora-train")
    status = await status_where(kubectl, "sql-lora", "Succeeded", lambda s: s.get("phase") == "Succeeded")
    assert status["progress"] == "100%" and status["step"] == 8
    assert status["conditions"][0]["status"] == "True" and "sql-lora" in status["conditions"][0]["message"]

    # 5. The queued run starts; its trainer fails: Failed, with the trainer's own error in the
    # status and a Warning.
    job = await eventually(lambda: kubectl.get("jobs", "bad-lora-train"), what="the second trainer Job")
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["template"]["spec"]["containers"][0]["resources"])
    # A CPU run, but on the base's ReadWriteOnce cache it runs beside the base's GPU pods: it
    # tolerates what they tolerate (and asks for no GPU).
    assert job["spec"]["template"]["spec"]["tolerations"] == deployment["spec"]["template"]["spec"]["tolerations"]
    error = {"error": {"message": "Dataset 'x' line 3: not JSON"}}
    await kubectl.start_pod_of(job, log=json.dumps(error) + "\n")
    await kubectl.finish_job("bad-lora-train", ok=False, message="BackoffLimitExceeded")
    status = await status_where(kubectl, "bad-lora", "Failed", lambda s: s.get("phase") == "Failed")
    assert status["adapter"] == "bad" and "line 3: not JSON" in status["message"]
    assert "line 3: not JSON" in (await event(kubectl, "bad-lora", "TrainingFailed"))["message"]


async def _job(kubectl, component):
    jobs = [j for j in await kubectl.list("jobs") if j["metadata"]["labels"].get(names.LABEL_COMPONENT) == component]
    return jobs[0] if jobs else None
