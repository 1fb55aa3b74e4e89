"""Observe, plan, execute: the I/O around the pure plan, called by the kopf handlers."""
from __future__ import annotations

import datetime
import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from . import builders, names
from .builders.download import FETCH_CONTAINER
from .kube import POOL_GROUPS, Kube, KubeError
from .planning import POOL_CONDITION, Observed, adapters_unsettled, merge_patch, plan
from .progress import download_status, last_events
from .settings import OperatorSettings
from .validation import spec_problems

DOWNLOADING = ("Pending", "Downloading")

_LOG_TAIL = 20
_EVENT_REASONS = {"create": "Created", "patch": "Updated", "delete": "Deleted"}

logger = logging.getLogger(__name__)


class Locks:
    """One lock per Model: a Model event, a child event and the poller can fire
    together, and each of them reads, decides and writes."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def __call__(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)


@dataclass
class Context:
    """What every reconciliation needs: the API, the settings and the per-Model locks."""

    kube: Kube
    settings: OperatorSettings
    locks: Locks = field(default_factory=Locks)
    training_locks: Locks = field(default_factory=Locks)  # one per FineTune

    def post_event(self, model: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = model["metadata"]
        try:
            self.kube.create("events", meta["namespace"], builders.build_event(model, event_type, reason, message, _now()))
        except KubeError as e:  # an Event is a courtesy; the status already says it all
            logger.warning("Could not post the event %s about %s: %s", reason, meta["name"], e)


def reconcile_model(ctx: Context, namespace: str, name: str) -> str | None:
    """Bring the children and the status of one Model to what its spec asks; return the phase."""
    kube = ctx.kube
    with ctx.locks(namespace, name):
        model = kube.get("models", namespace, name)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return None  # ownerReferences take the children away
        observed = observe(kube, model, ctx.settings)
        result = plan(observed, ctx.settings, now=_now(), api_key=secrets.token_urlsafe(32))
        for action in result.actions:
            _execute(kube, namespace, action)
            if action.event:
                ctx.post_event(model, "Normal", _EVENT_REASONS[action.verb], action.event)
        _write_status(kube, model, result.status)
        for event_type, reason, message in result.events:
            ctx.post_event(model, event_type, reason, message)
        return result.status.get("phase")


def owner_of(child: dict[str, Any], kind: str = names.KIND) -> tuple[str, str] | None:
    """The (namespace, name) of the Model (or the FineTune, by `kind`) that owns a child."""
    meta = child.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("apiVersion", "").startswith(names.GROUP + "/"):
            return meta.get("namespace", ""), ref["name"]
    return None


def update_progress(ctx: Context, namespace: str, name: str) -> None:
    """Copy the download's progress from the fetch pod's log into status.download.

    The fetch container prints one JSON line per progress step. Reading the tail of
    its log every few seconds needs no sidecar, no port and no API access from the
    Job: the Job stays unprivileged and the operator stays the only status writer.
    """
    kube = ctx.kube
    with ctx.locks(namespace, name):
        model = kube.get("models", namespace, name)
        if model is None:
            return
        status = model.get("status") or {}
        digest = builders.source_hash(model.get("spec") or {})
        if status.get("phase") not in DOWNLOADING or status.get("sourceHash") != digest:
            return
        log = _newest_fetch_log(kube, model, digest)
        progress = last_events(log).get("progress") if log else None
        if progress is None:
            return
        download = download_status(progress)
        if download != status.get("download"):
            kube.patch("models", namespace, name, {"status": {"download": merge_patch(
                status.get("download") or {}, download)}}, status=True)


def observe(kube: Kube, model: dict[str, Any], settings: OperatorSettings) -> Observed:
    namespace, name = model["metadata"]["namespace"], model["metadata"]["name"]
    spec, status = model.get("spec") or {}, model.get("status") or {}
    observed = Observed(
        model=model,
        pvc=kube.get("persistentvolumeclaims", namespace, names.pvc_name(name)),
        deployment=kube.get("deployments", namespace, names.deployment_name(name)),
        service=kube.get("services", namespace, names.service_name(name)),
    )
    if spec_problems(name, spec):
        return observed  # the plan reports the problems; no Job to look at
    # Discovery only for a Model that wants a pool or may have one (its condition says so).
    if builders.wants_inference_pool(spec, settings) or any(
            c.get("type") == POOL_CONDITION for c in status.get("conditions") or []):
        observed.pools_served = kube.served("inferencepools")
        if not observed.pools_served:
            observed.pool_versions = kube.served_versions("inferencepools", POOL_GROUPS)
    if observed.pools_served:
        observed.inference_pool = kube.get("inferencepools", namespace, names.inference_pool_name(name))
        if builders.wants_inference_pool(spec, settings):
            observed.picker_down = _picker_down(kube, namespace, builders.endpoint_picker_name(model, settings))
    digest = builders.source_hash(spec)
    job_name, adapters_job_name = names.job_name(name, digest), names.adapters_job_name(name, digest)
    if status.get("sourceHash") == digest and not adapters_unsettled(status):
        observed.job = kube.get("jobs", namespace, job_name)
    else:
        # A new Model, a new source or a new list of adapters: the only time other Jobs of this
        # Model may exist.
        jobs = kube.list("jobs", namespace, {names.LABEL_MODEL: names.base_name(name)})
        mine = {job["metadata"]["name"]: job for job in jobs if _owned_by(job, model)}
        observed.job = mine.pop(job_name, None)
        observed.adapters_job = mine.pop(adapters_job_name, None)
        observed.stale_jobs = list(mine.values())
    if any(job is not None and _failed(job) for job in (observed.job, observed.adapters_job)):
        observed.job_error = last_events(_newest_fetch_log(kube, model, digest) or "").get("error")
    return observed


def _picker_down(kube: Kube, namespace: str, service_name: str) -> str:
    """Why the pool's endpoint picker cannot take a request, or "": its Service is absent, or
    selects no Ready pod. (Its EndpointSlices would say the same, but need more RBAC; a Service
    without a selector has hand-made endpoints, taken as up.)"""
    service = kube.get("services", namespace, service_name)
    if service is None:
        return "does not exist"
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return ""
    ready = [pod for pod in kube.list("pods", namespace, selector)
             if not pod["metadata"].get("deletionTimestamp") and any(
                 c.get("type") == "Ready" and c.get("status") == "True"
                 for c in (pod.get("status") or {}).get("conditions") or [])]
    return "" if ready else "has no ready pod"


def _newest_fetch_log(kube: Kube, model: dict[str, Any], digest: str) -> str | None:
    namespace, name = model["metadata"]["namespace"], model["metadata"]["name"]
    pods = kube.list("pods", namespace, {names.LABEL_MODEL: names.base_name(name), names.LABEL_SOURCE_HASH: digest})
    pods.sort(key=lambda pod: pod["metadata"].get("creationTimestamp") or "", reverse=True)
    for pod in pods:  # the newest pod that has a log; retries make one pod each
        try:
            return kube.pod_log(namespace, pod["metadata"]["name"], FETCH_CONTAINER, _LOG_TAIL)
        except KubeError as e:
            logger.debug("No log for pod %s yet: %s", pod["metadata"]["name"], e)
    return None


def _execute(kube: Kube, namespace: str, action: Any) -> None:
    if action.verb == "create":
        kube.create(action.resource, namespace, action.body)
    elif action.verb == "patch":
        kube.patch(action.resource, namespace, action.name, action.body)
    elif action.verb == "delete":
        kube.delete(action.resource, namespace, action.name)
    else:  # pragma: no cover - the planner makes only these three
        raise ValueError(action.verb)


def _write_status(kube: Kube, model: dict[str, Any], new: dict[str, Any]) -> None:
    patch = merge_patch(model.get("status") or {}, new)
    if patch:  # written only when something changed: no event storm, no write load
        meta = model["metadata"]
        kube.patch("models", meta["namespace"], meta["name"], {"status": patch}, status=True)


def _owned_by(child: dict[str, Any], model: dict[str, Any]) -> bool:
    uid = model["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in child["metadata"].get("ownerReferences") or [])


def _failed(job: dict[str, Any]) -> bool:
    return any(c.get("type") == "Failed" and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
