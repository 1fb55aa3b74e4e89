"""The operator under trouble: 500s from the API server, and children deleted by hand."""
import kmock
import pytest

from .conftest import make_model
from .kmock_cluster import Emulator, eventually, inject

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
NAME = "smollm2-360m"


async def phase(kubectl, wanted, timeout=30.0):
    async def check():
        status = ((await kubectl.get("models", NAME)) or {}).get("status") or {}
        return status if status.get("phase") == wanted else None
    return await eventually(check, timeout=timeout, what=f"phase {wanted}")


async def downloaded(kubectl):
    """A Model whose download Job has succeeded."""
    await kubectl.create("models", make_model())
    [job] = await eventually(lambda: kubectl.list("jobs"), what="the Job")
    await kubectl.finish_job(job["metadata"]["name"])
    return job


async def test_retries_after_500s_from_the_api(operator, kubectl):
    # The first status write and the first two creations of the Deployment fail.
    status_fault = inject("PATCH", "models", sub="status")
    create_fault = inject("POST", "deployments", times=2)
    await downloaded(kubectl)
    deployment = await eventually(lambda: kubectl.get("deployments", NAME), timeout=60,
                                  what="the Deployment, after the 500s")
    assert create_fault[4] == 0 and status_fault[4] == 0  # every injected 500 was met
    await phase(kubectl, "Loading")
    await kubectl.patch("deployments", NAME, {"status": {"readyReplicas": 1}}, sub="status")
    await phase(kubectl, "Ready")
    assert len(await kubectl.list("deployments")) == 1
    assert deployment["metadata"]["ownerReferences"][0]["name"] == NAME


@pytest.mark.parametrize("child", ["deployments", "services"])
async def test_recreates_a_deleted_child(operator, kubectl, child):
    await downloaded(kubectl)
    first = await eventually(lambda: kubectl.get(child, NAME), what=f"the {child}")
    await kubectl.delete(child, NAME)

    def creations():
        return [r for r in kubectl.server if r.action == kmock.action.CREATE
                and r.resource is not None and r.resource.plural == child]
    assert len(creations()) == 1

    async def recreated():
        return len(creations()) == 2 and await kubectl.get(child, NAME)
    again = await eventually(recreated, timeout=30, what=f"the {child} made again")
    assert again["spec"] == first["spec"]
    assert again["metadata"]["ownerReferences"] == first["metadata"]["ownerReferences"]
    assert len(await kubectl.list("jobs")) == 1  # the file is there: no second download
