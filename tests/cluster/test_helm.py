"""helm install, upgrade and uninstall of the chart against a real API server."""
from __future__ import annotations

import json

from .conftest import CHART

NAMESPACE = "helm-lifecycle"


def _deployment_args(kubectl) -> list[str]:
    deployment = kubectl.get("deployment", "lifecycle-modelyard", namespace=NAMESPACE)
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_install_upgrade_uninstall(release, kubectl, helm):
    helm("install", "lifecycle", str(CHART), "--namespace", NAMESPACE, "--create-namespace")
    assert "--verbose" not in _deployment_args(kubectl)
    # The release's own namespace is the one it watches by default.
    assert kubectl.get("role", "lifecycle-modelyard", namespace=NAMESPACE) is not None

    helm("upgrade", "lifecycle", str(CHART), "--namespace", NAMESPACE, "--set", "operator.verbose=true",
         "--set", "cache.size=50Gi")
    assert "--verbose" in _deployment_args(kubectl)
    env = kubectl.get("deployment", "lifecycle-modelyard", namespace=NAMESPACE)[
        "spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MODELYARD_CACHE_SIZE", "value": "50Gi"} in env
    history = json.loads(helm("history", "lifecycle", "--namespace", NAMESPACE, "-o", "json"))
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    helm("uninstall", "lifecycle", "--namespace", NAMESPACE, "--wait")
    for kind, name in [("deployment", "lifecycle-modelyard"), ("role", "lifecycle-modelyard"),
                       ("rolebinding", "lifecycle-modelyard"), ("serviceaccount", "lifecycle-modelyard")]:
        assert kubectl.get(kind, name, namespace=NAMESPACE) is None, f"{kind}/{name} left behind"
    # helm never deletes what it installed from crds/: Models elsewhere keep their definition.
    assert kubectl.get("crd", "models.modelyard.dev", namespace="default") is not None
