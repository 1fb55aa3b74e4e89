"""The Helm chart, with the real helm binary and the real Kubernetes schemas."""
from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest

from modelyard.operator.kube import RESOURCES

from .binaries import ROOT
from .conftest import CHART, RenderError

K8S_VERSION = "1.33.0"


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def component(docs, kind, name="operator"):
    """The chart's objects of one kind that belong to the operator (or the router)."""
    return [d for d in by_kind(docs, kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]


def operator_container(docs):
    [deployment] = component(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("crd", ["model.yaml", "finetune.yaml"])
def test_the_crd_has_one_source(crd):
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(p.name for p in (ROOT / "crds").iterdir())
    assert (CHART / "crds" / crd).read_bytes() == (ROOT / "crds" / crd).read_bytes(), \
        f"charts/modelyard/crds/{crd} drifted from crds/{crd}: copy crds/{crd} over it"


def test_helm_lint_is_clean(helm):
    done = subprocess.run([str(helm), "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


@pytest.mark.parametrize("args", [
    [],
    ["--set", "watch.allNamespaces=true"],
    ["--set", "watch.namespaces={team-a,team-b}", "--set", "operator.verbose=true"],
    ["--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"],
])
def test_rendered_manifests_are_valid_kubernetes(render, args):
    docs = render("--include-crds", *args)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_crd_is_the_one_from_crds(render):
    crds = {c["metadata"]["name"]: c for c in by_kind(render("--include-crds"), "CustomResourceDefinition")}
    assert set(crds) == {"models.modelyard.dev", "finetunes.modelyard.dev"}
    crd = crds["models.modelyard.dev"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == \
        ["Kind", "Phase", "Progress", "Ready", "Endpoint", "Age"]


def test_namespaced_rbac_by_default(render):
    docs = render()
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    [role] = component(docs, "Role")
    assert role["metadata"]["namespace"] == "modelyard-system"
    assert operator_container(docs)["args"][:3] == ["operator", "--namespace", "modelyard-system"]


def test_one_role_per_watched_namespace(render):
    docs = render("--set", "watch.namespaces={team-a,team-b}")
    assert sorted(r["metadata"]["namespace"] for r in component(docs, "Role")) == ["team-a", "team-b"]
    bindings = by_kind(docs, "RoleBinding")
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"modelyard-system"}
    args = operator_container(docs)["args"]
    assert args[:5] == ["operator", "--namespace", "team-a", "--namespace", "team-b"]


def test_all_namespaces_uses_a_cluster_role(render):
    docs = render("--set", "watch.allNamespaces=true")
    assert by_kind(docs, "Role") == []
    [role] = component(docs, "ClusterRole")
    [binding] = component(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert "--all-namespaces" in operator_container(docs)["args"]


def test_rbac_is_least_privilege(render):
    [role] = component(render(), "Role")
    granted = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted[(group, resource)] = set(rule["verbs"])
    flat = [x for rule in role["rules"] for key in ("apiGroups", "resources", "verbs") for x in rule[key]]
    assert "*" not in flat
    # Exactly the operator's calls: operator/kube.py, plus kopf's list and watch.
    assert granted == {
        ("modelyard.dev", "models"): {"get", "list", "watch"},
        ("modelyard.dev", "models/status"): {"patch"},
        ("modelyard.dev", "models/scale"): {"patch"},
        ("modelyard.dev", "finetunes"): {"get", "list", "watch"},
        ("modelyard.dev", "finetunes/status"): {"patch"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
        ("", "services"): {"get", "list", "watch", "create"},
        ("", "persistentvolumeclaims"): {"get", "create"},
        ("", "secrets"): {"create"},
        ("", "pods"): {"list"},
        ("", "pods/log"): {"get"},
        ("", "events"): {"create"},
        ("inference.networking.k8s.io", "inferencepools"): {"get", "create", "patch", "delete"},
    }
    # Every resource the operator's client knows has a rule: none was forgotten.
    for plural, (group, _) in RESOURCES.items():
        assert (group, plural) in granted, plural


def test_operator_deployment(render):
    docs = render("--set", "image.server.tag=1.2.3", "--set", "gpu.nodeSelector.pool=gpu")
    [deployment] = component(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["image"] == "ghcr.io/modelyard/modelyard-operator:0.1.0"
    assert container["command"] == ["modelyard"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELYARD_SERVER_IMAGE"] == "ghcr.io/modelyard/modelyard-server:1.2.3"
    assert env["MODELYARD_GPU_NODE_SELECTOR"] == '{"pool":"gpu"}'
    assert env["MODELYARD_GPU_TOLERATIONS"] == '[{"effect":"NoSchedule","key":"nvidia.com/gpu","operator":"Exists"}]'
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "http://0.0.0.0:8080/healthz" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "my-modelyard"


def test_the_operator_reads_what_the_chart_sets(render):
    """The chart's variables parse into the operator's settings."""
    from modelyard.operator.settings import OperatorSettings

    env = {e["name"]: e["value"] for e in operator_container(render())["env"]}
    settings = OperatorSettings.from_env(env)
    assert settings.gpu_tolerations[0]["key"] == "nvidia.com/gpu"
    assert settings.job_resources["limits"] == {"memory": "1Gi"}
    assert settings.startup_seconds == 3600
    assert settings.cache_size == "20Gi"
    assert settings.allow_fetch == []
    trainer = {e["name"]: e["value"] for e in operator_container(render("--set", "image.trainer.tag=2.0.0"))["env"]}
    assert OperatorSettings.from_env(trainer).trainer_image == "ghcr.io/modelyard/modelyard-trainer:2.0.0"
    env = {e["name"]: e["value"] for e in operator_container(
        render("--set", "download.allowFetch={models.internal,10.0.0.0/8}"))["env"]}
    assert OperatorSettings.from_env(env).allow_fetch == ["models.internal", "10.0.0.0/8"]


@pytest.mark.parametrize("args", [
    ["--set", "watch.allNamespaces=yes-please"],
    ["--set", "download.backoffLimit=many"],
    ["--set", "download.allowFetch=10.0.0.0/8"],
    ["--set", "watch.namespaces={Not_A_Namespace}"],
    ["--set", "image.server.pullPolicy=Sometimes"],
    ["--set", "unknownValue=1"],
    ["--set", "router.replicas=0"],
    ["--set", "router.service.type=Headless"],
    ["--set", "networkPolicy.enabled=sometimes"],
    ["--set", "autoscaling.intervalSeconds=0"],
])
def test_values_of_the_wrong_type_fail_to_render(render, args):
    with pytest.raises(RenderError, match="values don't meet the specifications of the schema"):
        render(*args)


def test_notes_show_the_first_apply_and_the_first_call(helm):
    done = subprocess.run([str(helm), "install", "my", str(CHART), "--dry-run=client", "--namespace", "ai"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "kubectl apply -n ai" in notes
    assert "/v1/chat/completions" in notes and "Authorization: Bearer" in notes
    # the router's address, and how to scale
    assert "http://my-modelyard-router.ai.svc" in notes and "svc/my-modelyard-router" in notes
    assert "kubectl scale model" in notes


def test_serving_allow_paths_reaches_the_servers_allowed_folders(render):
    """serving.allowPaths goes through the operator into the inference pods'
    MODELYARD_ALLOWED_PATHS, and the server reads it as its allowed folders; by default a pod
    gets none and the server in it allows no folder."""
    from modelyard.operator import builders
    from modelyard.operator.settings import OperatorSettings
    from modelyard.server.registry import allowed
    from modelyard.server.settings import Settings

    model = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model",
             "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
             "spec": {"kind": "llm", "source": {"url": "https://example.com/m.gguf"}}}

    def pod_env(*args):
        settings = OperatorSettings.from_env(
            {e["name"]: e["value"] for e in operator_container(render(*args))["env"]})
        server = builders.build_deployment(model, settings, source_hash="abc")
        [container] = server["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]} | {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}

    def folders(env):
        return allowed.for_settings(Settings.from_env(env), environ=env)

    default = pod_env()
    assert "MODELYARD_ALLOWED_PATHS" not in default
    assert folders(default).roots == ()
    told = pod_env("--set", "serving.allowPaths={/cache/shared,/cache/my models}")
    assert told["MODELYARD_ALLOWED_PATHS"] == '["/cache/shared", "/cache/my models"]'
    assert str(folders(told).check("/cache/my models/a.gguf")) == "/cache/my models/a.gguf"
    with pytest.raises(allowed.PathNotAllowed):
        folders(told).check("/cache/other/a.gguf")


@pytest.mark.parametrize("value", ["{/etc}", "{/}", "{/cachex}", "{cache}", "/cache"])
def test_serving_allow_paths_stay_on_the_cache_volume(render, value):
    """The pods mount only the cache at /cache: a folder elsewhere would be the image's own files."""
    with pytest.raises(RenderError, match="values don't meet the specifications of the schema"):
        render("--set", f"serving.allowPaths={value}")
