"""The Gateway API Inference Extension's InferencePool for a Model: its pods, their port and the
endpoint picker that chooses among them.

Schema: `inference.networking.k8s.io/v1`, kind InferencePool (GAIE's
config/crd/bases/inference.networking.k8s.io_inferencepools.yaml, v1.5.0): `spec.selector.
matchLabels`, `spec.targetPorts` (the port the picker scrapes /metrics on and routes to),
`spec.endpointPickerRef` (a Service: name and port).
"""
from __future__ import annotations

from typing import Any

from .. import names
from ..settings import SERVER_PORT, OperatorSettings
from . import common
from .serving import selector_labels

POOL_API_VERSION = "inference.networking.k8s.io/v1"


def wants_inference_pool(spec: dict[str, Any], settings: OperatorSettings) -> bool:
    """A Model's own spec.inferencePool decides; without it, the chart's gatewayInference.enabled."""
    asked = spec.get("inferencePool")
    return settings.inference_pool if asked is None else bool(asked)


def endpoint_picker_name(model: dict[str, Any], settings: OperatorSettings) -> str:
    """The picker's Service: the chart's, or else `<pool>-epp`, the name GAIE's inferencepool
    Helm chart gives the picker it deploys for a pool of that name (release = pool)."""
    return settings.endpoint_picker or names.endpoint_picker_service(model["metadata"]["name"])


def build_inference_pool(model: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    pool = {
        "apiVersion": POOL_API_VERSION,
        "kind": "InferencePool",
        "metadata": {
            "name": names.inference_pool_name(model["metadata"]["name"]),
            "labels": common.labels(model, "inference-pool"),
        },
        # The CRD's defaults written out (appProtocol, group, kind, failureMode): the pool the
        # API server stores is then this one, and a later pass finds nothing to patch.
        "spec": {
            "selector": {"matchLabels": selector_labels(model)},
            "targetPorts": [{"number": SERVER_PORT}],
            "appProtocol": "http",
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": endpoint_picker_name(model, settings),
                "port": {"number": settings.endpoint_picker_port},
                "failureMode": "FailClose",
            },
        },
    }
    return common.owned(pool, model)
