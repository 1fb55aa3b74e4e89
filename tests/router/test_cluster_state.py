"""The router's view of the cluster, fed watch events by hand: which pods are a Model's
endpoints, per-namespace relists, Model lookup by id or Ollama name, who may be woken."""
from __future__ import annotations

from modelyard.server.router.cluster import Cluster, parse_selector, pod_endpoint, wants_scale_from_zero

SELECTOR = "app.kubernetes.io/component=server,modelyard.dev/model=tiny"


def model(name="tiny", ns="ai", selector=SELECTOR, **spec):
    return {"metadata": {"name": name, "namespace": ns, "generation": 1}, "spec": {"kind": "llm", **spec},
            "status": {"selector": selector}}


def pod(name, ip, ns="ai", ready=True, model_label="tiny", port=None):
    containers = [{"ports": [{"name": "http", "containerPort": port}]}] if port else []
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": {"app.kubernetes.io/component": "server", "modelyard.dev/model": model_label}},
            "spec": {"containers": containers},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_selector_and_endpoint_parsing():
    assert parse_selector("a=b, c==d") == {"a": "b", "c": "d"}
    assert parse_selector(None) == {}
    assert pod_endpoint(pod("p", "127.0.0.9")) == "127.0.0.9:8083"
    assert pod_endpoint(pod("p", "::1", port=9000)) == "[::1]:9000"
    assert pod_endpoint(pod("p", "127.0.0.9", ready=False)) is None
    gone = pod("p", "127.0.0.9")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_endpoint(gone) is None


def test_a_models_endpoints_are_its_ready_pods_in_its_namespace():
    c = Cluster(16, 1.25)
    c.replace("models", [model()])
    c.replace("pods", [pod("a", "127.0.0.1"), pod("b", "127.0.0.2", ready=False),
                       pod("c", "127.0.0.3", ns="other"), pod("d", "127.0.0.4", model_label="else")])
    assert c.find("tiny").balancer.endpoints == ["127.0.0.1:8083"]
    c.apply("pods", "MODIFIED", pod("b", "127.0.0.2"))
    assert c.find("tiny").balancer.endpoints == ["127.0.0.1:8083", "127.0.0.2:8083"]
    c.apply("pods", "DELETED", pod("a", "127.0.0.1"))
    assert c.find("tiny").balancer.endpoints == ["127.0.0.2:8083"]


def test_a_model_without_a_selector_has_no_endpoints():
    c = Cluster(16, 1.25)
    c.replace("models", [model(selector=None)])
    c.replace("pods", [pod("a", "127.0.0.1")])
    assert c.find("tiny").balancer.endpoints == []


def test_a_relist_of_one_namespace_keeps_the_others():
    c = Cluster(16, 1.25)
    c.replace("models", [model()], "ai")
    c.replace("models", [model("big", ns="team")], "team")
    c.replace("pods", [pod("a", "127.0.0.1")], "ai")
    c.replace("models", [], "team")
    assert c.find("tiny") is not None and c.find("big") is None
    assert c.find("tiny").balancer.endpoints == ["127.0.0.1:8083"]


def test_lookup_by_id_or_ollama_name():
    c = Cluster(16, 1.25)
    c.replace("models", [model("llama3.2--1b"), model("tiny")])
    assert c.find("llama3.2:1b").name == "llama3.2--1b"
    assert c.find("tiny:latest").name == "tiny"
    assert c.find("TINY").name == "tiny"
    assert c.find("absent") is None


def test_who_is_woken_from_zero_and_once_per_generation():
    assert wants_scale_from_zero(model(replicas=0))
    assert wants_scale_from_zero(model(replicas=0, autoscaling={"minReplicas": 0}))
    assert not wants_scale_from_zero(model(replicas=1))
    assert not wants_scale_from_zero(model(replicas=3, autoscaling={"minReplicas": 0}))  # pods on the way
    assert wants_scale_from_zero(model(autoscaling={"minReplicas": 0}))
    c = Cluster(16, 1.25)
    c.replace("models", [model(replicas=0)])
    entry = c.find("tiny")
    assert entry.claim_wake() and not entry.claim_wake()
    bumped = model(replicas=0)
    bumped["metadata"]["generation"] = 2
    c.apply("models", "MODIFIED", bumped)
    assert entry.claim_wake()


def test_an_adapters_name_finds_its_base_model():
    c = Cluster(16, 1.25)
    c.replace("models", [model(adapters=[{"name": "tiny-sql", "source": {"path": "adapters/sql.gguf"}}]),
                         model("other")])
    assert c.find("tiny-sql").name == "tiny"
    assert c.find("tiny-sql:latest").name == "tiny"  # an Ollama name of it
    assert c.find("tiny-chat") is None


def test_a_finetunes_adapter_finds_its_base_model():
    c = Cluster(16, 1.25)
    c.replace("models", [model()])
    finetune = {"metadata": {"name": "ft", "namespace": "ai"}, "spec": {"baseModel": "tiny"},
                "status": {"phase": "Succeeded", "adapter": "tiny-support"}}
    c.replace("finetunes", [finetune])
    assert c.find("tiny-support").name == "tiny"
    c.apply("finetunes", "ADDED", {**finetune, "metadata": {"name": "elsewhere", "namespace": "other"},
                                   "status": {"adapter": "lost"}})
    assert c.find("lost") is None  # its base is not a Model of its namespace
    c.apply("finetunes", "DELETED", finetune)
    assert c.find("tiny-support") is None
