"""The real operator process against KMock: a Model's InferencePool where the API server has
GAIE's CRD (made, kept as built, deleted when no longer asked for), and where it has not (a
condition and one Warning event; the Model is served as ever)."""
import kmock as kmock_lib
import pytest

from modelyard.operator import names

from .conftest import make_model
from .kmock_cluster import _VERBS, NAMESPACE, Emulator, declare_inference_pools, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
NAME = "smollm2-360m"


def condition(model, kind):
    return next((c for c in (model.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


async def pool_condition(kubectl, status, reason):
    async def check():
        c = condition(await kubectl.get("models", NAME) or {}, "InferencePool")
        return c if (c.get("status"), c.get("reason")) == (status, reason) else None
    return await eventually(check, what=f"InferencePool condition {status} {reason}")


async def test_a_pool_per_model_where_the_crd_is_installed(kmock, operator, kubectl):
    declare_inference_pools(kmock)
    # The pool's endpoint picker, as GAIE's chart (or ours) deploys it: a Service and a Ready pod.
    await kubectl.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{NAME}-epp"},
                                      "spec": {"selector": {"app": "epp"}, "ports": [{"port": 9002}]}})
    await kubectl.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "epp-0", "labels": {"app": "epp"}},
                                  "spec": {"containers": [{"name": "epp", "image": "epp"}]},
                                  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    model = await kubectl.create("models", make_model(inferencePool=True))
    pool = await eventually(lambda: kubectl.get("inferencepools", NAME), what="the InferencePool")
    assert pool["spec"] == {
        "selector": {"matchLabels": {names.LABEL_MODEL: NAME, names.LABEL_COMPONENT: "server"}},
        "targetPorts": [{"number": 8083}],
        "appProtocol": "http",
        "endpointPickerRef": {"name": f"{NAME}-epp", "kind": "Service", "port": {"number": 9002}, "group": "",
                              "failureMode": "FailClose"},
    }
    assert pool["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
    c = await pool_condition(kubectl, "True", "Created")
    assert f"{NAME}-epp:9002" in c["message"]

    # The picker's pod goes: the next pass says that a Gateway cannot route to this Model, once.
    await kubectl.delete("pods", "epp-0")
    await kubectl.change_spec(NAME, {"replicas": 3})
    c = await pool_condition(kubectl, "False", "PickerUnavailable")
    assert "has no ready pod" in c["message"] and f"{NAME}-epp:9002" in c["message"]
    assert [e["type"] for e in await kubectl.events() if e.get("reason") == "PickerUnavailable"] == ["Warning"]
    assert await kubectl.get("inferencepools", NAME)  # the pool stays

    # Someone edits the pool: the next reconciliation puts it back as built.
    await kubectl.patch("inferencepools", NAME, {"spec": {"targetPorts": [{"number": 9000}]}})
    await kubectl.change_spec(NAME, {"replicas": 2})

    async def restored():
        pool = await kubectl.get("inferencepools", NAME)
        return pool if pool["spec"]["targetPorts"] == [{"number": 8083}] else None
    await eventually(restored, what="the pool's port back to 8083")

    # The Model no longer asks: its pool goes, and so does the condition.
    await kubectl.change_spec(NAME, {"inferencePool": False})
    await eventually(lambda: _absent(kubectl), what="the pool deleted")
    model = await eventually(lambda: _without_condition(kubectl), what="no InferencePool condition")
    assert operator.process.poll() is None


async def _absent(kubectl):
    return await kubectl.get("inferencepools", NAME) is None


async def _without_condition(kubectl):
    model = await kubectl.get("models", NAME)
    return model if not condition(model, "InferencePool") else None


async def test_without_the_crd_a_condition_and_one_event(operator, kubectl):
    await kubectl.create("models", make_model(inferencePool=True))
    c = await pool_condition(kubectl, "False", "CRDNotInstalled")
    assert "inference.networking.k8s.io/v1" in c["message"]
    await eventually(lambda: kubectl.list("jobs"), what="the download Job, as ever")
    await kubectl.change_spec(NAME, {"replicas": 2})  # another pass

    async def second_pass():
        model = await kubectl.get("models", NAME)
        return model if model["status"].get("observedGeneration") == 2 else None
    await eventually(second_pass, what="the second pass")
    warnings = [e for e in await kubectl.events() if e.get("reason") == "CRDNotInstalled"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert operator.process.poll() is None


async def test_only_gaies_older_crd_a_condition_and_nothing_made_there(kmock, operator, kubectl):
    """GAIE before v1.0 served InferencePools as inference.networking.x-k8s.io/v1alpha2, another
    schema: the operator makes none there and says which CRD it needs."""
    old = "inference.networking.x-k8s.io/v1alpha2/inferencepools"
    kmock.resources[old] = kmock_lib.ResourceInfo(kind="InferencePool", namespaced=True, verbs=_VERBS)
    await kubectl.create("models", make_model(inferencePool=True))
    c = await pool_condition(kubectl, "False", "UnsupportedCRDVersion")
    assert "only as inference.networking.x-k8s.io/v1alpha2" in c["message"]
    assert "inference.networking.k8s.io/v1" in c["message"]
    await eventually(lambda: kubectl.list("jobs"), what="the download Job, as ever")
    olds = await kubectl._call("GET", f"/apis/{old.rsplit('/', 1)[0]}/namespaces/{NAMESPACE}/inferencepools")
    assert olds["items"] == []
    assert operator.process.poll() is None
