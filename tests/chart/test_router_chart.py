"""The chart's router (Deployment, Service, PodDisruptionBudget, ServiceAccount, RBAC) and
its NetworkPolicies, rendered by the real helm."""
from __future__ import annotations

import json

from modelyard.operator import builders
from modelyard.operator.settings import OperatorSettings

from .test_chart import by_kind, component


def router(docs):
    [deployment] = component(docs, "Deployment", "router")
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def matches(selector, labels):
    return selector.items() <= labels.items()


def test_the_router_runs_the_server_image_twice_behind_a_service_and_a_pdb(render):
    docs = render("--set", "image.server.tag=1.2.3", "--set", "watch.namespaces={team-a,team-b}")
    deployment, container = router(docs)
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "ghcr.io/modelyard/modelyard-server:1.2.3"
    assert container["command"] == ["modelyard"]
    assert container["args"] == ["router", "--port", "8080", "--namespace", "team-a", "--namespace", "team-b"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    [service] = component(docs, "Service", "router")
    assert matches(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == "http"
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    # the operator's pods are not the router's: neither selector takes the other's pods
    [operator] = component(docs, "Deployment")
    assert not matches(service["spec"]["selector"], operator["spec"]["template"]["metadata"]["labels"])
    [account] = component(docs, "ServiceAccount", "router")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"] == "my-modelyard-router"


def test_the_router_may_watch_models_finetunes_and_pods_and_scale_models_nothing_else(render):
    docs = render("--set", "watch.namespaces={team-a,team-b}")
    roles = component(docs, "Role", "router")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    granted = {(group, resource, verb) for rule in roles[0]["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == {
        ("modelyard.dev", "models", "list"), ("modelyard.dev", "models", "watch"),
        ("modelyard.dev", "models/scale", "patch"),
        ("modelyard.dev", "finetunes", "list"), ("modelyard.dev", "finetunes", "watch"),
        ("", "pods", "list"), ("", "pods", "watch"),
    }
    for binding in component(docs, "RoleBinding", "router"):
        assert binding["roleRef"]["name"] == "my-modelyard-router"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-modelyard-router",
                                        "namespace": "modelyard-system"}]


def test_all_namespaces_gives_the_router_a_cluster_role_and_no_network_policies(render):
    docs = render("--set", "watch.allNamespaces=true")
    _, container = router(docs)
    assert container["args"][-2:] == ["--namespace", "all"]
    assert component(docs, "ClusterRole", "router") and component(docs, "Role", "router") == []
    assert by_kind(docs, "NetworkPolicy") == []


def test_router_off(render):
    docs = render("--set", "router.enabled=false")
    assert [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "router"] == []
    assert len(component(docs, "Deployment")) == 1


def test_network_policies_let_the_router_operator_and_namespace_in_and_only_dns_out(render):
    docs = render("--set", "watch.namespaces={team-a}")
    policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"my-modelyard-inference", "my-modelyard-download"}
    assert {p["metadata"]["namespace"] for p in policies.values()} == {"team-a"}

    # The selectors match the pods the operator really builds.
    model = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model",
             "metadata": {"name": "m", "namespace": "team-a", "uid": "u"},
             "spec": {"kind": "llm", "source": {"url": "https://example.com/m.gguf"}}}
    settings = OperatorSettings()
    server_pod = builders.build_deployment(model, settings, source_hash="x")["spec"]["template"]["metadata"]["labels"]
    job_pod = builders.build_download_job(model, settings)["spec"]["template"]["metadata"]["labels"]
    inference, download = policies["my-modelyard-inference"]["spec"], policies["my-modelyard-download"]["spec"]
    assert matches(inference["podSelector"]["matchLabels"], server_pod)
    assert not matches(inference["podSelector"]["matchLabels"], job_pod)
    assert matches(download["podSelector"]["matchLabels"], job_pod)

    [rule] = inference["ingress"]
    assert rule["ports"] == [{"port": 8083, "protocol": "TCP"}]
    sources = rule["from"]
    assert {"podSelector": {}} in sources  # the Models' own namespace
    router_pod = router(docs)[0]["spec"]["template"]["metadata"]["labels"]
    operator_pod = component(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    release = {"kubernetes.io/metadata.name": "modelyard-system"}
    for pod in (router_pod, operator_pod):
        assert any(s.get("namespaceSelector", {}).get("matchLabels") == release
                   and matches(s["podSelector"]["matchLabels"], pod) for s in sources), pod
    # out: DNS only for the inference pods; DNS and the web for downloads; nothing in
    [dns] = inference["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert download["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in download
    web = download["egress"][1]
    assert {p["port"] for p in web["ports"]} == {80, 443}
    assert web["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in web["to"][0]["ipBlock"]["except"]

    assert by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy") == []
    prometheus = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render("--set", "watch.namespaces={team-a}", "--set-json", f"networkPolicy.extraFrom=[{json.dumps(prometheus)}]")
    [inference] = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-inference")]
    assert inference["spec"]["ingress"][0]["from"][-1] == prometheus


def test_the_operator_gets_the_autoscaler_settings(render):
    container = component(render("--set", "autoscaling.intervalSeconds=5"), "Deployment")[0]["spec"]["template"][
        "spec"]["containers"][0]
    settings = OperatorSettings.from_env({e["name"]: e["value"] for e in container["env"]})
    assert settings.autoscale_interval == 5 and settings.autoscale_window == 60


def test_the_routers_key_comes_from_a_secret(render):
    _, container = router(render("--set", "router.apiKeySecretRef.name=router-key"))
    [variable] = [e for e in container["env"] if e["name"] == "MODELYARD_API_KEY"]
    assert variable["valueFrom"] == {"secretKeyRef": {"name": "router-key", "key": "key"}}
    _, container = router(render())
    assert "MODELYARD_API_KEY" not in {e["name"] for e in container["env"]}
    from modelyard.server.router.settings import RouterSettings

    assert RouterSettings.from_env({"MODELYARD_API_KEY": "k"}).api_key == "k"
