"""Pieces that the download Job and the inference pods share."""
from __future__ import annotations

import copy
from typing import Any

from .. import names
from ..settings import CACHE_MOUNT, OperatorSettings


def labels(model: dict[str, Any], component: str) -> dict[str, str]:
    base = names.base_name(model["metadata"]["name"])
    return {
        "app.kubernetes.io/name": "modelyard",
        "app.kubernetes.io/instance": base,
        names.LABEL_COMPONENT: component,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_MODEL: base,
    }


def owned(obj: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """Set the namespace and the ownerReference, so deleting the Model deletes the child.

    What kopf.adopt() writes, without kopf: builders stay pure, importable and testable
    without the framework. The Model is the controller: one owner of each child."""
    meta = obj.setdefault("metadata", {})
    owner = model["metadata"]
    meta["namespace"] = owner["namespace"]
    meta["ownerReferences"] = [{
        "apiVersion": model.get("apiVersion", names.API_VERSION),
        "kind": model.get("kind", names.KIND),
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }]
    return obj


def pod_security(settings: OperatorSettings) -> dict[str, Any]:
    # fsGroup makes a freshly provisioned cache volume writable by the non-root user.
    uid = settings.run_as_user
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard, with a read-only root filesystem on top."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def placement(spec: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity of a Model's pods.

    A Model that sets a field gets exactly that; a GPU Model that does not gets the
    operator's GPU defaults (from the chart's values).
    """
    gpu = (spec.get("resources") or {}).get("gpu") or 0
    node_selector = spec.get("nodeSelector")
    tolerations = spec.get("tolerations")
    if node_selector is None and gpu:
        node_selector = settings.gpu_node_selector
    if tolerations is None and gpu:
        tolerations = settings.gpu_tolerations
    result: dict[str, Any] = {}
    if node_selector:
        result["nodeSelector"] = copy.deepcopy(node_selector)
    if tolerations:
        result["tolerations"] = copy.deepcopy(tolerations)
    if spec.get("affinity"):
        result["affinity"] = copy.deepcopy(spec["affinity"])
    return result


HOSTNAME = "kubernetes.io/hostname"


def cache_labels(owner_with_cache: dict[str, Any]) -> dict[str, str]:
    """The label of a pod that mounts `owner_with_cache`'s cache volume."""
    return {names.LABEL_CACHE: names.base_name(owner_with_cache["metadata"]["name"])}


def on_one_node(owner_with_cache: dict[str, Any]) -> bool:
    """Whether the Model's cache attaches to one node at a time (ReadWriteOnce, the default)."""
    cache = (owner_with_cache.get("spec") or {}).get("cache") or {}
    return (cache.get("accessMode") or "ReadWriteOnce") == "ReadWriteOnce"


def with_cache_node(owner_with_cache: dict[str, Any], placement_: dict[str, Any]) -> dict[str, Any]:
    """`placement_`, and on a ReadWriteOnce cache a required pod affinity to the other pods that
    mount it, by node. Such a volume attaches to one node at a time: a second replica, an
    adapters Job or a trainer scheduled elsewhere would wait in ContainerCreating on a
    Multi-Attach error for as long as the first runs. The first of them goes anywhere its
    placement allows: the scheduler lets a pod that matches its own affinity term start where
    no pod matches it yet (Kubernetes docs, "Assigning Pods to Nodes", inter-pod affinity), and
    the pods of a finished Job no longer count (kube-scheduler watches only pods that are not
    Succeeded or Failed: newPodInformer in pkg/scheduler/scheduler.go).

    A Model whose own affinity has required pod affinity terms is left as it is: the scheduler's
    exception holds only while no pod matches any of the terms, so with those of the user's
    that match, the first replica could never start."""
    if not on_one_node(owner_with_cache):
        return placement_
    result = copy.deepcopy(placement_)
    affinity = result.setdefault("affinity", {})
    pod_affinity = affinity.setdefault("podAffinity", {})
    if pod_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"):
        return placement_
    pod_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = [
        {"labelSelector": {"matchLabels": cache_labels(owner_with_cache)}, "topologyKey": HOSTNAME}]
    return result


def container_resources(spec: dict[str, Any]) -> dict[str, Any]:
    """A container's resources from a spec's `resources`: requests and limits as given, and
    `gpu` as an nvidia.com/gpu limit (a Model's inference pods, a FineTune's trainer)."""
    wanted = spec.get("resources") or {}
    result: dict[str, Any] = {}
    if wanted.get("requests"):
        result["requests"] = {k: str(v) for k, v in wanted["requests"].items()}
    limits = {k: str(v) for k, v in (wanted.get("limits") or {}).items()}
    if wanted.get("gpu"):
        limits["nvidia.com/gpu"] = str(wanted["gpu"])
    if limits:
        result["limits"] = limits
    return result


def job(name: str, labels: dict[str, str], container: dict[str, Any], owner_with_cache: dict[str, Any],
        placement_: dict[str, Any], settings: OperatorSettings, *, backoff_limit: int,
        deadline_seconds: int) -> dict[str, Any]:
    """A Job of one container that writes into a Model's cache (`owner_with_cache`'s PVC): the
    download Job and a FineTune's trainer. The caller sets its owner."""
    pod_spec = {
        "restartPolicy": "Never",
        # Service links would inject MODELYARD_PORT-like variables that the CLI reads.
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(settings),
        "containers": [container],
        "volumes": [cache_volume(owner_with_cache, read_only=False), TMP_VOLUME],
        **with_cache_node(owner_with_cache, placement_),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline_seconds,
            "template": {"metadata": {"labels": {**labels, **cache_labels(owner_with_cache)}}, "spec": pod_spec},
        },
    }


def cache_volume(model: dict[str, Any], read_only: bool) -> dict[str, Any]:
    claim: dict[str, Any] = {"claimName": names.pvc_name(model["metadata"]["name"])}
    if read_only:
        claim["readOnly"] = True
    return {"name": "cache", "persistentVolumeClaim": claim}


def cache_mount(read_only: bool) -> dict[str, Any]:
    return {"name": "cache", "mountPath": CACHE_MOUNT, "readOnly": read_only}


# The root filesystem is read-only; HOME, caches and gunicorn's heartbeat files go here.
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}
HOME_ENV = {"name": "HOME", "value": "/tmp"}
