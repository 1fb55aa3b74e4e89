"""The real operator against KMock: a change of spec.adapters alone keeps the pods serving.

An adapters-only Job (`modelyard fetch ... --adapters-only`) fetches the new list against the
base already in the cache while the Deployment keeps its replicas and its pod template; the pods
roll once the Job succeeds. A failed adapters Job leaves the Deployment alone and says which
adapter failed (condition AdaptersReady and a Warning). A new source is a full download as ever.
"""
import json

import pytest

from modelyard.operator import builders, names

from .conftest import make_model
from .kmock_cluster import Emulator, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
NAME = "smollm2-360m"
SQL = {"name": "sql", "source": {"huggingface": {"repo": "org/loras", "file": "sql.gguf"}}}
PIRATE = {"name": "pirate", "source": {"url": "https://example.com/pirate.gguf"}}
BAD = {"name": "bad", "source": {"url": "https://example.com/other-base.gguf"}}


def condition(status, kind):
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


async def status_of(kubectl):
    return ((await kubectl.get("models", NAME)) or {}).get("status") or {}


async def job_of(kubectl, spec, adapters_only=True):
    """The (adapters-only, or full download) Job of the spec's source_hash, once the operator has made it."""
    name = (names.adapters_job_name if adapters_only else names.job_name)(NAME, builders.source_hash(spec))
    return await eventually(lambda: kubectl.get("jobs", name), what=f"Job {name}")


async def adapters_reason(kubectl, *reasons):
    async def check():
        status = await status_of(kubectl)
        return status if condition(status, "AdaptersReady").get("reason") in reasons else None
    return await eventually(check, what=f"AdaptersReady {reasons}")


async def rolled_to(kubectl, spec):
    digest = builders.source_hash(spec)

    async def check():
        deployment = await kubectl.get("deployments", NAME)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return deployment if annotations[names.ANNOTATION_SOURCE_HASH] == digest else None
    return await eventually(check, what="the pods rolled to the new cache")


def command(job):
    return job["spec"]["template"]["spec"]["containers"][0]["command"]


def adapters_in(job):
    line = command(job)
    return [json.loads(line[i + 1])["name"] for i, arg in enumerate(line) if arg == "--adapter"]


async def test_an_adapters_change_keeps_the_pods_serving(operator, kubectl):
    model = make_model(adapters=[SQL], replicas=2)
    await kubectl.create("models", model)
    first = await job_of(kubectl, model["spec"], adapters_only=False)
    assert "--adapters-only" not in command(first)  # a new Model downloads its base
    await kubectl.finish_job(first["metadata"]["name"])
    deployment = await eventually(lambda: kubectl.get("deployments", NAME), what="the Deployment")
    await kubectl.patch("deployments", NAME, {"status": {"readyReplicas": 2, "replicas": 2}}, sub="status")
    ready = await adapters_reason(kubectl, "Fetched")
    assert ready["baseHash"] == builders.base_hash(model["spec"])
    template = deployment["spec"]["template"]

    # 1. One adapter more: an adapters-only Job; the Deployment keeps its replicas and template.
    added = {**model["spec"], "adapters": [SQL, PIRATE]}
    await kubectl.change_spec(NAME, {"adapters": added["adapters"]})
    job = await job_of(kubectl, added)
    assert command(job)[-1] == "--adapters-only" and adapters_in(job) == ["sql", "pirate"]
    fetching = await adapters_reason(kubectl, "JobCreated", "Fetching")
    assert condition(fetching, "AdaptersReady")["status"] == "False"
    assert "pirate" in condition(fetching, "AdaptersReady")["message"]
    assert fetching["phase"] == "Ready" and condition(fetching, "Downloaded")["status"] == "True"
    current = await kubectl.get("deployments", NAME)
    assert current["spec"]["replicas"] == 2 and current["spec"]["template"] == template
    assert await kubectl.get("jobs", first["metadata"]["name"]) is None  # two fetches never share the store

    # ...and when it succeeds the pods roll (a template change: a rolling update, never 0).
    await kubectl.finish_job(job["metadata"]["name"])
    rolled = await rolled_to(kubectl, added)
    assert rolled["spec"]["replicas"] == 2
    assert (await adapters_reason(kubectl, "Fetched"))["sourceHash"] == builders.source_hash(added)
    template = rolled["spec"]["template"]

    # 2. An adapter that fails: the old pods serve on; the condition and a Warning name it.
    broken = {**model["spec"], "adapters": [SQL, PIRATE, BAD]}
    await kubectl.change_spec(NAME, {"adapters": broken["adapters"]})
    job = await job_of(kubectl, broken)
    error = {"error": {"code": 400, "message": "Adapter 'bad': The adapter changes 'blk.0.attn_q.weight' "
                                               "with sizes that do not fit the base"}}
    await kubectl.start_pod_of(job, log=json.dumps(error) + "\n")
    await kubectl.finish_job(job["metadata"]["name"], ok=False, message="Job has reached the specified backoff limit")
    failed = await adapters_reason(kubectl, "AdapterFetchFailed")
    message = condition(failed, "AdaptersReady")["message"]
    assert "Adapter 'bad'" in message and "do not fit" in message and "serve the previous adapters" in message
    assert failed["phase"] == "Ready" and failed["sourceHash"] == builders.source_hash(added)

    async def warning():
        return [e for e in await kubectl.events() if e["type"] == "Warning" and e["reason"] == "AdapterFetchFailed"]
    assert "Adapter 'bad'" in (await eventually(warning, what="a Warning event"))[0]["message"]
    current = await kubectl.get("deployments", NAME)
    assert current["spec"]["replicas"] == 2 and current["spec"]["template"] == template

    # 2b. Back to the list the pods serve: the failed Job may have left adapters in the cache, so a
    # Job of this list runs again (named apart from the earlier one) and settles it; no roll.
    await kubectl.change_spec(NAME, {"adapters": added["adapters"]})
    name = names.adapters_job_name(NAME, builders.source_hash(added))
    again = await eventually(lambda: kubectl.get("jobs", name), what="the adapters Job of the list served")
    assert command(again)[-1] == "--adapters-only" and adapters_in(again) == ["sql", "pirate"]
    assert await kubectl.get("jobs", job["metadata"]["name"]) is None
    await kubectl.finish_job(name)
    assert condition(await adapters_reason(kubectl, "Fetched"), "AdaptersReady")["status"] == "True"
    current = await kubectl.get("deployments", NAME)
    assert current["spec"]["replicas"] == 2 and current["spec"]["template"] == template

    # 3. Adapters removed (the bad one and pirate): a Job that fetches nothing and drops them from
    # the cache, then the pods roll without them.
    fewer = {**model["spec"], "adapters": [SQL]}
    await kubectl.change_spec(NAME, {"adapters": fewer["adapters"]})
    job = await job_of(kubectl, fewer)
    assert command(job)[-1] == "--adapters-only" and adapters_in(job) == ["sql"]
    assert (await kubectl.get("deployments", NAME))["spec"]["replicas"] == 2
    await kubectl.finish_job(job["metadata"]["name"])
    assert (await rolled_to(kubectl, fewer))["spec"]["replicas"] == 2

    # 4. A new source: a full download as before, the pods at 0 meanwhile.
    moved = {**fewer, "source": {"url": "https://example.com/smollm2-q4.gguf"}}
    await kubectl.change_spec(NAME, {"source": {"url": moved["source"]["url"], "huggingface": None}})
    job = await job_of(kubectl, moved, adapters_only=False)
    assert "--adapters-only" not in command(job) and command(job)[2] == moved["source"]["url"]
    assert (await kubectl.get("deployments", NAME))["spec"]["replicas"] == 0
    assert condition(await status_of(kubectl), "Downloaded")["status"] == "False"
