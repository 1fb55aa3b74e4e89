"""The operator's Kubernetes client: the shared dict-in, dict-out client
(server/shared/kube.py, which the cluster router uses too) over every resource the operator
reads or manages."""
from __future__ import annotations

from modelyard.server.shared import kube as shared
from modelyard.server.shared.kube import KubeError, load_api_client

# plural -> (group, version); "" is the core group.
RESOURCES: dict[str, tuple[str, str]] = {
    **shared.RESOURCES,
    "finetunes": (shared.GROUP, shared.VERSION),
    "persistentvolumeclaims": ("", "v1"),
    "services": ("", "v1"),
    "secrets": ("", "v1"),
    "events": ("", "v1"),
    "jobs": ("batch", "v1"),
    "deployments": ("apps", "v1"),
    "inferencepools": ("inference.networking.k8s.io", "v1"),  # only where GAIE's CRD is installed
}


class Kube(shared.Kube):
    resources = RESOURCES


__all__ = ["RESOURCES", "Kube", "KubeError", "load_api_client"]
