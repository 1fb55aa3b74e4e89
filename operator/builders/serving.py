"""The inference Deployment, its Service and the generated API-key Secret."""
from __future__ import annotations

import copy
import json
import math
from typing import Any

from .. import names
from ..settings import CACHE_MOUNT, SERVER_PORT, OperatorSettings
from . import common

SERVER_CONTAINER = "server"
_PROBE_PERIOD = 10

# gguf/onnx spec fields -> the server's MODELYARD_* variables; they override the
# preloaded model's registry defaults, so a change here rolls the pods.
_TUNING_ENV = [
    ("gguf", "chatTemplateHint", "MODELYARD_CHAT_TEMPLATE_HINT"),
    ("gguf", "initContextSize", "MODELYARD_INIT_CONTEXT_SIZE"),
    ("gguf", "initGpuLayerSize", "MODELYARD_INIT_GPU_LAYER_SIZE"),
    ("gguf", "kvCacheType", "MODELYARD_KV_CACHE_TYPE"),
    ("onnx", "executionProvider", "MODELYARD_EXECUTION_PROVIDER"),
]


def api_key_ref(model: dict[str, Any]) -> dict[str, str]:
    """The Secret and key holding the endpoint's API key: the Model's own, or the generated one."""
    ref = model["spec"].get("apiKeySecretRef")
    if ref:
        return {"name": ref["name"], "key": ref.get("key") or "key"}
    return {"name": names.api_key_secret_name(model["metadata"]["name"]), "key": "key"}


def build_api_key_secret(model: dict[str, Any], key: str) -> dict[str, Any]:
    """The Secret made when a Model names none: the server refuses 0.0.0.0 without a key."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": names.api_key_secret_name(model["metadata"]["name"]),
            "labels": common.labels(model, "api-key"),
        },
        "stringData": {"key": key},
    }
    return common.owned(secret, model)


def build_service(model: dict[str, Any]) -> dict[str, Any]:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.service_name(model["metadata"]["name"]),
            "labels": common.labels(model, "server"),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": "http", "port": SERVER_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}],
        },
    }
    return common.owned(service, model)


def pod_spec_hash(template: dict[str, Any]) -> str:
    """The hash that decides a rollout: any change in the pod template changes it."""
    template = copy.deepcopy(template)
    template.get("metadata", {}).get("annotations", {}).pop(names.ANNOTATION_POD_SPEC_HASH, None)
    return names.stable_hash(template)


def build_deployment(
    model: dict[str, Any], settings: OperatorSettings, *, source_hash: str
) -> dict[str, Any]:
    """The inference pods."""
    name, spec = model["metadata"]["name"], model["spec"]
    gpu = (spec.get("resources") or {}).get("gpu") or 0
    template = {
        "metadata": {
            "labels": {**common.labels(model, "server"), **common.cache_labels(model)},
            # The downloaded source is part of the template, so a new file rolls the pods.
            "annotations": {names.ANNOTATION_SOURCE_HASH: source_hash},
        },
        "spec": {
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": common.pod_security(settings),
            "containers": [_server_container(name, spec, settings)],
            "volumes": [common.cache_volume(model, read_only=True), {"name": "tmp", "emptyDir": {"medium": "Memory"}}],
            **common.with_cache_node(model, common.placement(spec, settings)),
        },
    }
    digest = pod_spec_hash(template)
    template["metadata"]["annotations"][names.ANNOTATION_POD_SPEC_HASH] = digest
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.deployment_name(name),
            "labels": common.labels(model, "server"),
            "annotations": {names.ANNOTATION_POD_SPEC_HASH: digest},
        },
        "spec": {
            "replicas": spec.get("replicas", 1),
            "selector": {"matchLabels": selector_labels(model)},
            "strategy": _strategy(gpu),
            "revisionHistoryLimit": 3,
            # Loading a big model is slow progress, not a stuck rollout.
            "progressDeadlineSeconds": settings.startup_seconds + 600,
            "template": template,
        },
    }
    return common.owned(deployment, model)


def selector_labels(model: dict[str, Any]) -> dict[str, str]:
    labels = common.labels(model, "server")
    return {k: labels[k] for k in (names.LABEL_MODEL, names.LABEL_COMPONENT)}


def pod_selector(model: dict[str, Any]) -> str:
    """The inference pods' label selector as a string: status.selector, which the scale
    subresource hands to an HPA (it finds the pods it measures with it)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model).items()))


def _strategy(gpu: int) -> dict[str, Any]:
    # A surge pod would need a spare GPU that a GPU node pool rarely has: the rollout
    # would hang. GPU Models replace pods one at a time; CPU Models surge, no downtime.
    if gpu:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _server_container(name: str, spec: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    key = api_key_ref({"metadata": {"name": name}, "spec": spec})
    env = [
        common.HOME_ENV,
        {"name": "MODELYARD_API_KEY", "valueFrom": {"secretKeyRef": key}},
    ]
    for section, field, variable in _TUNING_ENV:
        value = (spec.get(section) or {}).get(field)
        if value is not None:
            env.append({"name": variable, "value": str(value)})
    if settings.pod_allowed_paths:  # else none: a pod has no folders of a user (docs/security.md)
        env.append({"name": "MODELYARD_ALLOWED_PATHS", "value": json.dumps(settings.pod_allowed_paths)})
    return {
        "name": SERVER_CONTAINER,
        "image": settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["modelyard"],
        "args": ["serve", "--host", "0.0.0.0", "--port", str(SERVER_PORT), "--store", CACHE_MOUNT, "--preload", name],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": common.container_resources(spec),
        # /readyz answers 200 only once the model is loaded: Ready means the model answers.
        "readinessProbe": _probe("/readyz", period=5, failure_threshold=3),
        "livenessProbe": _probe("/healthz", period=_PROBE_PERIOD, failure_threshold=6, timeout=5),
        # Holds the liveness probe off while a large model is read from the volume.
        "startupProbe": _probe(
            "/healthz", period=_PROBE_PERIOD,
            failure_threshold=max(1, math.ceil(settings.startup_seconds / _PROBE_PERIOD)),
        ),
        "securityContext": common.container_security(),
        "volumeMounts": [common.cache_mount(read_only=True), common.TMP_MOUNT],
    }


def _probe(path: str, *, period: int, failure_threshold: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failure_threshold,
    }
