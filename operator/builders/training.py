"""The trainer Job of a FineTune: `modelyard train` in the trainer image, on the base Model's
cache volume, with GPUs when asked and the base Model's node placement."""
from __future__ import annotations

from typing import Any

from modelyard.server.shared.finetuning import BY_FIELD

from .. import names
from ..settings import CACHE_MOUNT, OperatorSettings
from . import common

TRAINER_CONTAINER = "train"
_PLACEMENT = ("nodeSelector", "tolerations", "affinity")


def adapter_name(finetune: dict[str, Any]) -> str:
    """The adapter's model id: spec.adapterName, else the FineTune's name."""
    return finetune["spec"].get("adapterName") or finetune["metadata"]["name"]


def train_command(finetune: dict[str, Any]) -> list[str]:
    """The `modelyard train` command line (server/train_cli.py): only the hyper-parameters the
    spec sets, so the trainer's defaults (Silicon Studio's) apply to the rest."""
    spec = finetune["spec"]
    dataset = spec["dataset"]
    source = dataset["url"] if dataset.get("url") else f"{CACHE_MOUNT}/{dataset['path']}"
    command = ["modelyard", "train", "--store", CACHE_MOUNT, "--base", spec["baseModel"],
               "--adapter", adapter_name(finetune), "--dataset", source]
    for field, value in sorted((spec.get("hyperparameters") or {}).items()):
        if field in BY_FIELD and value is not None:
            command += [f"--{BY_FIELD[field].name.replace('_', '-')}", str(value)]
    return command


def placement(finetune: dict[str, Any], base: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """Where the trainer runs: the FineTune's own nodeSelector, tolerations and affinity, else
    the base Model's (its cache volume binds where its pods run), with the FineTune's GPUs
    deciding the operator's GPU defaults as they do for a Model."""
    spec, base_spec = finetune["spec"], base.get("spec") or {}
    merged: dict[str, Any] = {k: spec[k] if k in spec else base_spec[k]
                              for k in _PLACEMENT if k in spec or k in base_spec}
    merged["resources"] = {"gpu": (spec.get("resources") or {}).get("gpu") or 0}
    result = common.placement(merged, settings)
    # On a ReadWriteOnce cache the trainer runs beside the base's pods (common.with_cache_node),
    # so it tolerates what they tolerate: a trainer without GPUs may then join GPU pods on a
    # tainted node. Tolerations only allow; the pod affinity picks the node.
    if "tolerations" not in spec and common.on_one_node(base):
        tolerations = common.placement(base_spec, settings).get("tolerations")
        if tolerations:
            result["tolerations"] = tolerations
    return result


def trainer_labels(finetune: dict[str, Any]) -> dict[str, str]:
    base = names.base_name(finetune["metadata"]["name"])
    return {
        "app.kubernetes.io/name": "modelyard",
        "app.kubernetes.io/instance": base,
        names.LABEL_COMPONENT: "trainer",
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_FINETUNE: base,
        names.LABEL_BASE_MODEL: names.base_name(finetune["spec"]["baseModel"]),
    }


def build_trainer_job(finetune: dict[str, Any], base: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """The Job, owned by the FineTune (deleting the FineTune deletes it and its pod)."""
    labels = trainer_labels(finetune)
    env = [common.HOME_ENV, {"name": "HF_HOME", "value": "/tmp/hf"}, {"name": "HF_HUB_OFFLINE", "value": "1"}]
    if settings.allow_fetch:  # a dataset url obeys the download Job's egress policy
        env.append({"name": "MODELYARD_ALLOW_FETCH", "value": ",".join(settings.allow_fetch)})
    container = {
        "name": TRAINER_CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": train_command(finetune),
        "env": env,
        "resources": common.container_resources(finetune["spec"]),
        "securityContext": common.container_security(),
        # The base's cache, writable: the adapter is committed into it as the store commits
        # any model (a .partial name, then a rename), so a pod never sees half of it.
        "volumeMounts": [common.cache_mount(read_only=False), common.TMP_MOUNT],
        # The last line of the log (a JSON error) is also the pod's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    job = common.job(names.trainer_job_name(finetune["metadata"]["name"]), labels, container, base,
                     placement(finetune, base, settings), settings, backoff_limit=settings.trainer_backoff_limit,
                     deadline_seconds=settings.trainer_deadline_seconds)
    return common.owned(job, finetune)
