"""The plan of a FineTune: its trainer Job and its status, from what the operator observed.

Pure, as planning.py is for Models: `plan_training()` takes the FineTune, its base Model,
its Job and the last lines of the trainer's log, and returns the calls to make, the status
to write and the Events to post. The trainer prints one JSON line per step
(server/train_cli.py); the operator reads the tail of its pod's log, as it reads a download's
progress, so the Job needs no API access and the operator stays the only status writer.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from modelyard.server.shared.facts import id_problem
from modelyard.server.shared.finetuning import hyperparameter_problems

from .builders.training import adapter_name, build_trainer_job
from .planning import Action, Plan
from .progress import json_lines_backwards
from .settings import OperatorSettings

FINISHED = ("Succeeded", "Failed")
CONDITION = "Succeeded"


@dataclass
class TrainingObserved:
    finetune: dict[str, Any]
    base: dict[str, Any] | None = None  # the base Model, None when absent
    job: dict[str, Any] | None = None
    log: dict[str, Any] = field(default_factory=dict)  # last_training_events of the trainer's log
    # Another FineTune whose trainer Job on the same base has not finished: one trainer writes
    # into a base's cache at a time (the store's fine-tuning jobs are one process's).
    training_before: str | None = None


def last_training_events(log_text: str) -> dict[str, Any]:
    """The latest step (step, totalSteps, epoch, loss) and the error, from a log tail."""
    found: dict[str, Any] = {}
    for event in json_lines_backwards(log_text):
        if "step" in event and "totalSteps" in event and "step" not in found:
            found.update({k: event[k] for k in ("step", "totalSteps", "epoch", "loss") if k in event})
        elif "error" in event and "error" not in found:
            error = event["error"]
            found["error"] = error.get("message") if isinstance(error, dict) else str(error)
    return found


def spec_problems(finetune: dict[str, Any]) -> list[str]:
    """What the CRD's schema says too; checked again, as a CRD can be older than the operator."""
    spec = finetune.get("spec") or {}
    problems = []
    if not spec.get("baseModel"):
        problems.append("spec.baseModel is required (a Model in this namespace)")
    if problem := id_problem(adapter_name({"metadata": finetune["metadata"], "spec": spec})):
        problems.append(f"the adapter's name (spec.adapterName, else metadata.name) {problem}")
    dataset = spec.get("dataset") or {}
    if bool(dataset.get("path")) == bool(dataset.get("url")):
        problems.append("spec.dataset: set exactly one of path or url")
    elif dataset.get("path") and (dataset["path"].startswith("/") or ".." in dataset["path"].split("/")):
        problems.append("spec.dataset.path is relative to the cache volume and cannot leave it")
    elif dataset.get("url") and not str(dataset["url"]).startswith(("http://", "https://")):
        problems.append("spec.dataset.url must be an http(s) URL")
    problems += hyperparameter_problems(spec.get("hyperparameters") or {}, prefix="spec.hyperparameters.")
    gpu = (spec.get("resources") or {}).get("gpu")
    if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0):
        problems.append("spec.resources.gpu must be an integer of at least 0")
    return problems


def plan_training(observed: TrainingObserved, settings: OperatorSettings, *, now: str) -> Plan:
    finetune, job = observed.finetune, observed.job
    status = _Status(finetune, now)
    problems = spec_problems(finetune)
    if problems:
        status.set("Failed", "InvalidSpec", "Fix the spec (delete and create the FineTune again): "
                   + "; ".join(problems) + ".", warn=True)
        return status.plan([])
    if job is None:
        if status.phase in FINISHED:
            return status.plan([])  # its Job was deleted afterwards: the result stands
        return _plan_start(observed, settings, status)
    status.new["jobName"] = job["metadata"]["name"]
    log = observed.log
    if "step" in log:
        status.progress(log)
    if _job_condition(job, "Complete"):
        status.new.update(step=status.new.get("totalSteps", status.new.get("step", 0)), progress="100%")
        status.set("Succeeded", "AdapterReady", f"Adapter '{adapter_name(finetune)}' is in the cache of "
                   f"Model {finetune['spec']['baseModel']}; its pods serve it by that name.")
    elif failed := _job_condition(job, "Failed"):
        cause = log.get("error") or failed.get("message") or "the trainer failed"
        status.set("Failed", "TrainingFailed", f"Job {job['metadata']['name']} failed: {cause}. Fix the "
                   "cause, then delete and create the FineTune again.", warn=True)
    elif (job.get("status") or {}).get("active"):
        status.set("Running", "Training", f"Job {job['metadata']['name']} is training.")
    else:
        status.set("Pending", "JobPending", f"Job {job['metadata']['name']} is waiting for its pod.")
    return status.plan([])


def _plan_start(observed: TrainingObserved, settings: OperatorSettings, status: "_Status") -> Plan:
    finetune, base = observed.finetune, observed.base
    base_name = finetune["spec"]["baseModel"]
    if base is None:
        status.set("Pending", "BaseModelNotFound", f"Model {base_name} does not exist in this namespace: "
                   "create it, or fix spec.baseModel.", warn=True)
        return status.plan([])
    kind = (base.get("spec") or {}).get("kind")
    if kind != "llm":
        status.set("Failed", "BaseNotTrainable", f"Model {base_name} is a {kind} model; the trainer takes "
                   "an llm (a llama-family GGUF).", warn=True)
        return status.plan([])
    downloaded = next((c for c in (base.get("status") or {}).get("conditions") or []
                       if c.get("type") == "Downloaded"), {})
    if downloaded.get("status") != "True":
        status.set("Pending", "BaseNotReady", f"Waiting for Model {base_name} to be downloaded "
                   f"(its phase is {(base.get('status') or {}).get('phase') or 'unknown'}).", warn=True)
        return status.plan([])
    if observed.training_before:
        status.set("Pending", "Queued", f"FineTune {observed.training_before} is training on Model "
                   f"{base_name}; this one starts when it ends.")
        return status.plan([])
    job = build_trainer_job(finetune, base, settings)
    status.new["jobName"] = job["metadata"]["name"]
    status.set("Pending", "JobCreated", f"Trainer Job {job['metadata']['name']} created.")
    return status.plan([Action("create", "jobs", job["metadata"]["name"], job)])


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return {}


class _Status:
    """The status being planned; an Event goes out only when the reason changes, so a resync
    or a progress read does not post the same warning again."""

    def __init__(self, finetune: dict[str, Any], now: str) -> None:
        self.old = copy.deepcopy(finetune.get("status") or {})
        self.new = copy.deepcopy(self.old)
        self.now = now
        self.events: list[tuple[str, str, str]] = []
        generation = finetune["metadata"].get("generation")
        if generation is not None:
            self.new["observedGeneration"] = generation
        self.new["adapter"] = adapter_name(finetune)
        self.new.setdefault("phase", "Pending")

    @property
    def phase(self) -> str | None:
        return self.old.get("phase")

    def progress(self, log: dict[str, Any]) -> None:
        step, total = int(log["step"]), int(log["totalSteps"])
        self.new.update(step=step, totalSteps=total,
                        progress=f"{min(100, step * 100 // total) if total > 0 else 0}%")
        if "epoch" in log:
            self.new["epoch"] = int(log["epoch"])
        if isinstance(log.get("loss"), (int, float)):
            self.new["loss"] = round(float(log["loss"]), 4)

    def set(self, phase: str, reason: str, message: str, *, warn: bool = False) -> None:
        self.new["phase"] = phase
        self.new["message"] = message
        old = next((c for c in self.old.get("conditions") or [] if c.get("type") == CONDITION), {})
        state = "True" if phase == "Succeeded" else "False"
        condition = {"type": CONDITION, "status": state, "reason": reason, "message": message,
                     "lastTransitionTime": old.get("lastTransitionTime") if old.get("status") == state else self.now}
        if not condition["lastTransitionTime"]:
            condition["lastTransitionTime"] = self.now
        self.new["conditions"] = [condition]
        if old.get("reason") != reason:
            self.events.append(("Warning" if warn else "Normal", reason, message))

    def plan(self, actions: list[Action]) -> Plan:
        return Plan(actions, self.new, self.events)

