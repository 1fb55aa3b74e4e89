"""Observe, plan, execute for FineTunes: the I/O around training.plan_training."""
from __future__ import annotations

import logging
from typing import Any

from . import names
from .builders.training import TRAINER_CONTAINER, trainer_labels
from .kube import Kube, KubeError
from .planning import merge_patch
from .reconcile import Context, _execute, _now, _owned_by, owner_of
from .training import FINISHED, TrainingObserved, last_training_events, plan_training

_LOG_TAIL = 20
logger = logging.getLogger(__name__)


def reconcile_finetune(ctx: Context, namespace: str, name: str) -> tuple[str, str] | None:
    """Bring the trainer Job and the status of one FineTune to what it asks; return its phase
    and its base Model's name (None when it is gone)."""
    kube = ctx.kube
    with ctx.training_locks(namespace, name):
        finetune = kube.get(names.FINETUNE_PLURAL, namespace, name)
        if finetune is None or finetune["metadata"].get("deletionTimestamp"):
            return None  # the ownerReference takes the Job away
        observed = observe(kube, finetune)
        result = plan_training(observed, ctx.settings, now=_now())
        for action in result.actions:
            _execute(kube, namespace, action)
        patch = merge_patch(finetune.get("status") or {}, result.status)
        if patch:
            kube.patch(names.FINETUNE_PLURAL, namespace, name, {"status": patch}, status=True)
        for event_type, reason, message in result.events:
            ctx.post_event(finetune, event_type, reason, message)
        return result.status.get("phase", ""), (finetune.get("spec") or {}).get("baseModel") or ""


def observe(kube: Kube, finetune: dict[str, Any]) -> TrainingObserved:
    namespace = finetune["metadata"]["namespace"]
    spec = finetune.get("spec") or {}
    observed = TrainingObserved(finetune)
    job = kube.get("jobs", namespace, names.trainer_job_name(finetune["metadata"]["name"]))
    if job is not None and _owned_by(job, finetune):
        observed.job = job
        log = _newest_trainer_log(kube, finetune)
        observed.log = last_training_events(log) if log else {}
    elif (finetune.get("status") or {}).get("phase") not in FINISHED and spec.get("baseModel"):
        observed.base = kube.get("models", namespace, spec["baseModel"])
        if observed.base is not None:
            observed.training_before = _training_on(kube, namespace, spec["baseModel"])
    return observed


def _training_on(kube: Kube, namespace: str, base: str) -> str | None:
    """The FineTune whose trainer Job on this base has not finished yet, if any."""
    jobs = kube.list("jobs", namespace, {names.LABEL_BASE_MODEL: names.base_name(base),
                                         names.LABEL_COMPONENT: "trainer"})
    for job in sorted(jobs, key=lambda j: j["metadata"].get("creationTimestamp") or ""):
        done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])
        if not done:
            return (owner_of(job, names.FINETUNE_KIND) or ("", job["metadata"]["name"]))[1]
    return None


def _newest_trainer_log(kube: Kube, finetune: dict[str, Any]) -> str | None:
    namespace = finetune["metadata"]["namespace"]
    pods = kube.list("pods", namespace, {names.LABEL_FINETUNE: trainer_labels(finetune)[names.LABEL_FINETUNE]})
    pods.sort(key=lambda pod: pod["metadata"].get("creationTimestamp") or "", reverse=True)
    for pod in pods:
        try:
            return kube.pod_log(namespace, pod["metadata"]["name"], TRAINER_CONTAINER, _LOG_TAIL)
        except KubeError as e:
            logger.debug("No log for pod %s yet: %s", pod["metadata"]["name"], e)
    return None
