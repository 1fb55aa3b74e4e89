"""The reconciliation plan: what the children and the status of a Model should become.

`plan()` is pure. It takes what the operator observed (the Model and its children)
and returns the API calls to make and the whole status to write. The executor in
`reconcile.py` does the I/O. Running the plan twice, or after a restart, makes the
same calls or none: every name is deterministic.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from . import builders, names
from .builders.serving import api_key_ref
from .settings import SERVER_PORT, OperatorSettings
from .validation import spec_problems


@dataclass
class Observed:
    """The Model and its children, as read from the API (None when absent)."""

    model: dict[str, Any]
    pvc: dict[str, Any] | None = None
    job: dict[str, Any] | None = None  # the Job of the wanted source
    adapters_job: dict[str, Any] | None = None  # its adapters-only Job (the base was the cache's)
    stale_jobs: list[dict[str, Any]] = field(default_factory=list)  # Jobs of earlier sources
    deployment: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    job_error: str | None = None  # the fetch's own error line, when its Job failed
    pools_served: bool = False  # the API server serves InferencePools (GAIE's CRD is installed)
    inference_pool: dict[str, Any] | None = None
    pool_versions: list[str] = field(default_factory=list)  # other InferencePool versions served
    # The pool's endpoint picker: why no request can pass it ("" when one can), read only
    # for a Model that wants a pool.
    picker_down: str = ""


@dataclass
class Action:
    verb: str  # create | patch | delete
    resource: str  # plural of a kind in kube.RESOURCES
    name: str
    body: Any = None  # the manifest, or a JSON patch (a list) for `patch`
    event: str = ""  # what to tell the user, as a Normal event

    def __repr__(self) -> str:  # keeps test failures readable
        return f"<{self.verb} {self.resource}/{self.name}>"


@dataclass
class Plan:
    actions: list[Action]
    status: dict[str, Any]
    events: list[tuple[str, str, str]]  # (type, reason, message)


def plan(observed: Observed, settings: OperatorSettings, *, now: str, api_key: str) -> Plan:
    """What to do. `now` stamps changed conditions; `api_key` is used only for a new Secret."""
    model = observed.model
    name = model["metadata"]["name"]
    spec = model.get("spec") or {}
    status = _Status(model, now)

    problems = spec_problems(name, spec)
    if problems:
        status.failed("InvalidSpec", "Fix the spec: " + "; ".join(problems) + ".")
        return status.plan([])
    conflict = _name_conflict(observed)
    if conflict:
        status.failed("NameConflict", conflict)
        return status.plan([])

    digest = builders.source_hash(spec)
    actions: list[Action] = []
    if observed.pvc is None:
        actions.append(_create(builders.build_pvc(model, settings)))
    change = cache_change(observed)
    if change == NOTHING:
        _plan_serving(observed, settings, digest, api_key, actions, status)
    elif change == ADAPTERS:
        # The pods go on serving what the cache holds; they roll once the adapters are in.
        _plan_serving(observed, settings, status.old["sourceHash"], api_key, actions, status)
        _plan_adapters(observed, settings, actions, status)
    else:
        _plan_download(observed, settings, digest, actions, status)
    _plan_inference_pool(observed, settings, actions, status)
    return status.plan(actions)


def _plan_inference_pool(observed: Observed, settings: OperatorSettings, actions: list[Action],
                         status: "_Status") -> None:
    """The Model's InferencePool when it wants one and the API server has the kind; without the
    kind, a condition (and one Warning event) says so, and nothing else changes."""
    model, pool = observed.model, observed.inference_pool
    uid = model["metadata"].get("uid")
    ours = pool is not None and any(ref.get("uid") == uid for ref in pool["metadata"].get("ownerReferences") or [])
    if not builders.wants_inference_pool(model.get("spec") or {}, settings):
        if ours:
            actions.append(Action("delete", "inferencepools", pool["metadata"]["name"],
                                  event="Deleted the InferencePool: the Model no longer asks for one"))
        status.drop_condition(POOL_CONDITION)
        return
    if not observed.pools_served and observed.pool_versions:
        status.condition_with_event(POOL_CONDITION, "False", "UnsupportedCRDVersion", (
            f"No InferencePool made: the API server serves inferencepools only as "
            f"{', '.join(observed.pool_versions)}, which Modelyard does not write (another schema). Install "
            "the Gateway API Inference Extension's v1 CRDs (inference.networking.k8s.io/v1, GAIE v1.0 and "
            "later; they install beside the old ones); the Model serves meanwhile."))
        return
    if not observed.pools_served:
        status.condition_with_event(POOL_CONDITION, "False", "CRDNotInstalled", (
            "No InferencePool made: the API server does not serve inferencepools in "
            "inference.networking.k8s.io/v1. Install the Gateway API Inference Extension's v1 CRDs "
            "(config/crd/bases of its v1.x releases); the Model serves meanwhile."))
        return
    desired = builders.build_inference_pool(model, settings)
    pool_name = desired["metadata"]["name"]
    if pool is None:
        actions.append(Action("create", "inferencepools", pool_name, desired,
                              event=f"Created InferencePool {pool_name}"))
    elif not ours:
        status.condition_with_event(POOL_CONDITION, "False", "NameConflict", (
            f"InferencePool {pool_name} exists and belongs to something else: remove it or rename this Model."))
        return
    elif pool.get("spec") != desired["spec"]:
        actions.append(Action("patch", "inferencepools", pool_name,
                              [{"op": "replace", "path": "/spec", "value": desired["spec"]}],
                              event=f"Updated InferencePool {pool_name}"))
    ref = desired["spec"]["endpointPickerRef"]
    picker = f"Service {ref['name']}:{ref['port']['number']}"
    if observed.picker_down:
        # The pool fails closed: a Gateway answers every request for this Model with an error.
        status.condition_with_event(POOL_CONDITION, "False", "PickerUnavailable", (
            f"InferencePool {pool_name} selects this Model's pods, but its endpoint picker ({picker}) "
            f"{observed.picker_down}: a Gateway answers this Model's requests with an error until one runs "
            "(failureMode FailClose). Deploy it (the chart's gatewayInference.models, or GAIE's inferencepool "
            "chart), or name a running one in gatewayInference.endpointPicker."))
        return
    status.condition_with_event(POOL_CONDITION, "True", "Created", (
        f"InferencePool {pool_name} selects this Model's pods on port {SERVER_PORT}; its endpoint picker "
        f"is {picker}."))


NOTHING, ADAPTERS, SOURCE = "nothing", "adapters", "source"


def cache_change(observed: Observed) -> str:
    """What the cache lacks for the spec, the one place that decides it: NOTHING (it holds the
    spec's source_hash), ADAPTERS (it holds the spec's base, committed: only spec.adapters
    differ, so an adapters-only Job runs while the pods serve) or SOURCE (a full download)."""
    spec = observed.model.get("spec") or {}
    if observed.adapters_job is not None and _job_condition(observed.adapters_job, "Complete"):
        return NOTHING
    old = observed.model.get("status") or {}
    # Once an adapters Job has run for another list (and failed, or still runs, or was stopped),
    # the cache's adapters are not sourceHash's: only a Job of this list settles them.
    if not adapters_unsettled(old) and _is_downloaded(observed, builders.source_hash(spec)):
        return NOTHING
    if _condition(old, "Downloaded").get("status") == "True" and old.get("baseHash") == builders.base_hash(spec):
        return ADAPTERS
    return SOURCE


def adapters_unsettled(status: dict[str, Any]) -> bool:
    """An adapters-only Job was made and none has completed since (AdaptersReady is False)."""
    return _condition(status, ADAPTERS_CONDITION).get("status") == "False"


def _plan_adapters(observed: Observed, settings: OperatorSettings, actions: list[Action],
                   status: "_Status") -> None:
    """The adapters-only Job of the new source_hash (`<model>-adapters-<hash>`); the Deployment is
    left as it serves. Its failure is a condition and a Warning, never the phase."""
    model, job = observed.model, observed.adapters_job
    if observed.stale_jobs or observed.job is not None:
        # Two fetches never write into one store: an earlier Job (of an earlier list) stops first.
        for stale in observed.stale_jobs + ([observed.job] if observed.job is not None else []):
            actions.append(Action("delete", "jobs", stale["metadata"]["name"],
                                  event=f"Deleted Job {stale['metadata']['name']} before the new adapters' Job"))
        status.adapters("False", "Waiting", "Waiting for an earlier download Job to stop; "
                        "the pods serve the previous adapters meanwhile.")
        return
    if job is None:
        new = builders.build_download_job(model, settings, adapters_only=True)
        actions.append(Action("create", "jobs", new["metadata"]["name"], new, event=(
            f"Created Job {new['metadata']['name']} to fetch the adapters; the pods keep serving")))
        status.adapters("False", "JobCreated", f"Job {new['metadata']['name']} fetches the adapters "
                        f"{_names(model)}; the pods serve the previous ones until it completes.")
        return
    job_name = job["metadata"]["name"]
    failed = _job_condition(job, "Failed")
    if failed:
        cause = observed.job_error or failed.get("message") or "the Job failed"
        status.adapters("False", "AdapterFetchFailed", (
            f"Adapters Job {job_name} failed: {cause}. The pods serve the previous adapters. Fix "
            f"spec.adapters, or delete Job {job_name} to retry."), warn=True)
        return
    status.adapters("False", "Fetching", f"Job {job_name} fetches the adapters {_names(model)}; "
                    "the pods serve the previous ones until it completes.")


def _names(model: dict[str, Any]) -> str:
    return ", ".join(a["name"] for a in (model.get("spec") or {}).get("adapters") or []) or "(none)"


def _plan_download(
    observed: Observed, settings: OperatorSettings, digest: str, actions: list[Action], status: "_Status"
) -> None:
    model, job = observed.model, observed.job
    status.drop_condition(ADAPTERS_CONDITION)  # the Downloaded condition says it all meanwhile
    deployment = observed.deployment
    if deployment is not None and (deployment.get("spec") or {}).get("replicas") != 0:
        # The pods serve a file the Model no longer asks for, and a ReadWriteOnce cache
        # must be free for the new download's pod.
        actions.append(Action("patch", "deployments", deployment["metadata"]["name"],
                              [{"op": "replace", "path": "/spec/replicas", "value": 0}],
                              event="Scaled the inference pods to 0 while the new source downloads"))
    status.serving(deployment, observed.service, digest)
    if observed.stale_jobs:
        for stale in observed.stale_jobs:
            actions.append(Action("delete", "jobs", stale["metadata"]["name"],
                                  event=f"Deleted Job {stale['metadata']['name']} of the previous source"))
        # sourceHash stays the old one until they are gone, so the next pass lists again.
        status.set("Pending", downloaded=("False", "SourceChanged",
                   "Waiting for the previous source's download Job to stop."))
        return
    status.new_source(digest)
    if job is None:
        new = builders.build_download_job(model, settings)
        actions.append(_create(new))
        status.set("Pending", downloaded=("False", "JobCreated", f"Download Job {new['metadata']['name']} created."))
        return
    job_name = job["metadata"]["name"]
    if _job_condition(job, "Failed"):
        cause = observed.job_error or _job_condition(job, "Failed").get("message") or "the Job failed"
        status.failed("DownloadFailed", f"Download Job {job_name} failed: {cause}. Fix spec.source "
                      f"(or its token Secret), or delete Job {job_name} to retry.")
        return
    if (job.get("status") or {}).get("active"):
        status.set("Downloading", downloaded=("False", "Downloading", f"Job {job_name} is downloading."))
    else:
        status.set("Pending", downloaded=("False", "JobPending", f"Job {job_name} is waiting for its pod."))


def _plan_serving(
    observed: Observed, settings: OperatorSettings, digest: str, api_key: str,
    actions: list[Action], status: "_Status",
) -> None:
    model, deployment = observed.model, observed.deployment
    spec = model.get("spec") or {}
    status.downloaded(digest)
    desired = builders.build_deployment(model, settings, source_hash=digest)
    patch = _deployment_patch(deployment, desired) if deployment is not None else []
    rolls = any(op["path"] == "/spec/template" for op in patch)
    if not spec.get("apiKeySecretRef") and (deployment is None or rolls):
        # With each new pod template: the pods may be about to use the generated key for
        # the first time (the Model's own Secret was just dropped). 409 keeps the old key.
        actions.append(_create(builders.build_api_key_secret(model, api_key)))
    if observed.service is None:
        actions.append(_create(builders.build_service(model)))
    if deployment is None:
        actions.append(_create(desired))
    elif patch:
        event = "Rolling the inference pods to a new pod spec" if rolls else \
            f"Scaled the inference pods to {desired['spec']['replicas']}"
        actions.append(Action("patch", "deployments", desired["metadata"]["name"], patch, event=event))
    status.serving(deployment, observed.service or {}, digest)
    ready = status.ready_replicas
    if spec.get("replicas", 1) == 0:
        status.set("Pending", ready=("False", "ScaledToZero", _scaled_to_zero(spec)))
    elif ready and _serves(deployment, digest):
        status.set("Ready", ready=("True", "Ready", f"{ready} pod(s) serve the model at {status.endpoint}."))
    else:
        status.set("Loading", ready=("False", "Loading", "Waiting for an inference pod to load the model."))


POOL_CONDITION = "InferencePool"
ADAPTERS_CONDITION = "AdaptersReady"


def _scaled_to_zero(spec: dict[str, Any]) -> str:
    if spec.get("autoscaling"):
        return ("Scaled to zero: no requests in flight for the scale-down delay. The model stays "
                "in the cache; a request through the router scales it back to one pod.")
    return "spec.replicas is 0: the model stays in the cache and nothing serves it (kubectl scale to serve)."


def _deployment_patch(current: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that replaces what differs, so removed fields go too (a merge patch keeps them)."""
    key = names.ANNOTATION_POD_SPEC_HASH
    ops: list[dict[str, Any]] = []
    current_hash = ((current.get("metadata") or {}).get("annotations") or {}).get(key)
    if current_hash != desired["metadata"]["annotations"][key]:
        ops.append({"op": "replace", "path": "/spec/template", "value": desired["spec"]["template"]})
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {
            **((current.get("metadata") or {}).get("annotations") or {}), key: desired["metadata"]["annotations"][key]}})
        ops.append({"op": "replace", "path": "/spec/strategy", "value": desired["spec"]["strategy"]})
    if (current.get("spec") or {}).get("replicas") != desired["spec"]["replicas"]:
        ops.append({"op": "replace", "path": "/spec/replicas", "value": desired["spec"]["replicas"]})
    return ops


def _serves(deployment: dict[str, Any] | None, digest: str) -> bool:
    """Whether the ready pods load the wanted file, as far as the Deployment tells."""
    if deployment is None:
        return False
    annotations = ((deployment["spec"].get("template") or {}).get("metadata") or {}).get("annotations") or {}
    generation = deployment["metadata"].get("generation")
    observed_generation = (deployment.get("status") or {}).get("observedGeneration")
    stale = generation is not None and observed_generation is not None and observed_generation < generation
    return annotations.get(names.ANNOTATION_SOURCE_HASH) == digest and not stale


def _is_downloaded(observed: Observed, digest: str) -> bool:
    """The wanted source is complete in the cache, even if its Job has since been deleted."""
    old = observed.model.get("status") or {}
    if old.get("sourceHash") == digest and _condition(old, "Downloaded").get("status") == "True":
        return True
    return observed.job is not None and bool(_job_condition(observed.job, "Complete"))


def _name_conflict(observed: Observed) -> str | None:
    uid = observed.model["metadata"].get("uid")
    for child in (observed.pvc, observed.deployment, observed.service):
        if child is None:
            continue
        owners = (child.get("metadata") or {}).get("ownerReferences") or []
        if not any(ref.get("uid") == uid for ref in owners):
            kind, child_name = child.get("kind", "object"), child["metadata"]["name"]
            return (f"{kind} {child_name} exists and belongs to something else. Rename this Model "
                    f"or remove that {kind}: Models named alike share child names ('.' becomes '-').")
    return None


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return {}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _create(body: dict[str, Any]) -> Action:
    # No Event per created child: the phase's Event says it (JobCreated, Loading), and
    # at a few hundred Models every Event is one more write to the API server.
    kind = body["kind"]
    return Action("create", f"{kind.lower()}s" if kind != "PersistentVolumeClaim" else "persistentvolumeclaims",
                  body["metadata"]["name"], body)


class _Status:
    """The status being planned, built from the old one so unchanged parts stay as they are."""

    def __init__(self, model: dict[str, Any], now: str) -> None:
        self.model = model
        self.old = copy.deepcopy(model.get("status") or {})
        self.new = copy.deepcopy(self.old)
        self.now = now
        self.events: list[tuple[str, str, str]] = []
        generation = model["metadata"].get("generation")
        self.generation = generation if generation is not None else self.old.get("observedGeneration", 0)
        self.new["observedGeneration"] = self.generation
        self.new.setdefault("readyReplicas", 0)
        self.new.setdefault("replicas", 0)
        # The scale subresource's labelSelectorPath: known from the name alone, so an HPA
        # finds it from the first status write on.
        self.new["selector"] = builders.pod_selector(model)

    @property
    def ready_replicas(self) -> int:
        return self.new.get("readyReplicas", 0)

    @property
    def endpoint(self) -> str | None:
        return self.new.get("endpoint")

    def new_source(self, digest: str) -> None:
        if self.old.get("sourceHash") != digest:
            self.new["sourceHash"] = digest
            self.new["download"] = {"size": 0}

    def downloaded(self, digest: str) -> None:
        """The cache holds `digest` (the spec's source_hash, or the previous one while an
        adapters-only Job runs: the base is the same either way)."""
        self.new["sourceHash"] = digest
        self.new["baseHash"] = builders.base_hash(self.model.get("spec") or {})
        if (self.model.get("spec") or {}).get("adapters"):
            self.adapters("True", "Fetched", f"The adapters {_names(self.model)} are in the cache.")
        else:
            self.drop_condition(ADAPTERS_CONDITION)
        download = dict(self.new.get("download") or {})
        download.pop("progress", None)  # PROGRESS shows only while downloading
        if download.get("totalSize"):
            download["size"] = download["totalSize"]
        self.new["download"] = download
        self._condition("Downloaded", "True", "Downloaded", "The model is complete in the cache.")

    def serving(self, deployment: dict[str, Any] | None, service: dict[str, Any] | None, digest: str) -> None:
        deployment_status = (deployment or {}).get("status") or {}
        self.new["readyReplicas"] = int(deployment_status.get("readyReplicas") or 0)
        self.new["replicas"] = int(deployment_status.get("replicas") or 0)
        if service is not None:
            meta = self.model["metadata"]
            self.new["endpoint"] = names.endpoint(meta["name"], meta.get("namespace", ""), SERVER_PORT)
            self.new["apiKeySecretRef"] = api_key_ref(self.model)

    def set(self, phase: str, *, downloaded: tuple[str, str, str] | None = None,
            ready: tuple[str, str, str] | None = None) -> None:
        if downloaded:
            self._condition("Downloaded", *downloaded)
        self._condition("Ready", *(ready or ("False", downloaded[1] if downloaded else phase,
                                             "The model is not downloaded yet.")))
        self._phase(phase, "Warning" if phase == "Failed" else "Normal", *(ready or downloaded or ("", "", "")))

    def failed(self, reason: str, message: str) -> None:
        if reason == "DownloadFailed":
            self._condition("Downloaded", "False", reason, message)
        self._condition("Ready", "False", reason, message)
        self.new.get("download", {}).pop("progress", None)
        self._phase("Failed", "Warning", "False", reason, message)

    def _phase(self, phase: str, event_type: str, _status: str, reason: str, message: str) -> None:
        old_reason = _condition(self.old, "Ready").get("reason")
        self.new["phase"] = phase
        if self.old.get("phase") != phase or (phase == "Failed" and old_reason != reason):
            self.events.append((event_type, reason or phase, message))

    def adapters(self, status: str, reason: str, message: str, *, warn: bool = False) -> None:
        """The AdaptersReady condition; `warn`: a failure, told once as a Warning event too."""
        if warn:
            self.condition_with_event(ADAPTERS_CONDITION, status, reason, message)
        else:
            self._condition(ADAPTERS_CONDITION, status, reason, message)

    def condition_with_event(self, kind: str, status: str, reason: str, message: str) -> None:
        """A condition, and an Event when its status or reason is new (once, not each pass)."""
        old = _condition(self.old, kind)
        if (old.get("status"), old.get("reason")) != (status, reason) and status == "False":
            self.events.append(("Warning", reason, message))
        self._condition(kind, status, reason, message)

    def drop_condition(self, kind: str) -> None:
        if any(c.get("type") == kind for c in self.new.get("conditions") or []):
            self.new["conditions"] = [c for c in self.new["conditions"] if c.get("type") != kind]

    def _condition(self, kind: str, status: str, reason: str, message: str) -> None:
        old = _condition(self.old, kind)
        condition = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == status else self.now,
            "observedGeneration": self.generation,
        }
        others = [c for c in self.new.get("conditions") or [] if c.get("type") != kind]
        self.new["conditions"] = sorted(others + [condition], key=lambda c: c["type"])

    def plan(self, actions: list[Action]) -> Plan:
        return Plan(actions, self.new, self.events)


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (None when they are equal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            sub = merge_patch(old[key], value)
            patch[key] = sub if isinstance(value, dict) and isinstance(old[key], dict) else value
    return patch or None
