"""The operator's Kubernetes client: the shared dict-in, dict-out client
(server/shared/kube.py, which the cluster router uses too) over every resource the operator
reads or manages."""
from __future__ import annotations

import time
from typing import Any

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


# Where GAIE's InferencePool has been served: v1 (GAIE v1.0 and later, the one the operator
# writes) and the pre-v1 alpha versions in the x-k8s.io group (another schema).
POOL_GROUPS = ("inference.networking.k8s.io", "inference.networking.x-k8s.io")
_DISCOVERY_SECONDS = 60.0


class Kube(shared.Kube):
    resources = RESOURCES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._versions: dict[str, tuple[float, list[str]]] = {}

    def served_versions(self, plural: str, groups: tuple[str, ...]) -> list[str]:
        """The `group/version`s among `groups` that serve `plural`, from discovery, asked at most
        once a minute: what to tell a user whose cluster has a kind, but not the version used."""
        asked, answer = self._versions.get(plural, (0.0, []))
        if time.monotonic() - asked < _DISCOVERY_SECONDS:
            return answer
        answer = []
        for group in groups:
            try:
                versions = (self.request("GET", f"/apis/{group}") or {}).get("versions") or []
                for version in versions:
                    found = self.request("GET", f"/apis/{version['groupVersion']}") or {}
                    if any(r.get("name") == plural for r in found.get("resources") or []):
                        answer.append(version["groupVersion"])
            except KubeError as e:
                if e.status not in (403, 404, 503):
                    raise
        self._versions[plural] = (time.monotonic(), answer)
        return answer


__all__ = ["RESOURCES", "Kube", "KubeError", "load_api_client"]
