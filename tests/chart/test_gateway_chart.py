"""The chart's endpoint pickers and HTTPRoutes (gatewayInference.models, .gateway), rendered by
the real helm: one GAIE picker per listed Model under the name the operator's pools point at,
its RBAC, and a route from the named Gateway to the Model's pool."""
from __future__ import annotations

import json

import kubernetes_validate
import pytest

from modelyard.operator import names

from .conftest import RenderError
from .test_chart import K8S_VERSION, by_kind, component

HTTPROUTE_API = ("--api-versions", "gateway.networking.k8s.io/v1/HTTPRoute")
MODELS = [{"name": "llama-3.2-1b"}, {"name": "3B.Chat", "namespace": "team-b"}]


def gateway_args(*extra: str) -> list[str]:
    return ["--set", "watch.namespaces={team-a,team-b}", "--set-json", f"gatewayInference.models={json.dumps(MODELS)}",
            "--set", "gatewayInference.gateway.name=inference-gateway",
            "--set", "gatewayInference.gateway.namespace=gateways", *HTTPROUTE_API, *extra]


def test_off_by_default(render):
    docs = render(*HTTPROUTE_API)
    assert not component(docs, "Deployment", "endpoint-picker") and not by_kind(docs, "HTTPRoute")


def test_a_picker_per_listed_model_where_its_pool_points(render):
    docs = render(*gateway_args("--set", "gatewayInference.endpointPicker.image.tag=v1.5.1"))
    pickers = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
               for d in component(docs, "Deployment", "endpoint-picker")}
    # the operator's own names: its pools' endpointPickerRef (empty endpointPicker.name) and pool names
    expected = {("team-a", names.endpoint_picker_service("llama-3.2-1b")): names.inference_pool_name("llama-3.2-1b"),
                ("team-b", names.endpoint_picker_service("3B.Chat")): names.inference_pool_name("3B.Chat")}
    assert set(pickers) == set(expected) == {("team-a", "llama-3-2-1b-epp"), ("team-b", "m-3b-chat-epp")}
    services = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in component(docs, "Service", "endpoint-picker")}
    for key, pool in expected.items():
        pod = pickers[key]["spec"]["template"]
        [container] = pod["spec"]["containers"]
        assert container["image"] == "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.1"
        args = container["args"]
        assert args[args.index("--pool-name") + 1] == pool and args[args.index("--pool-namespace") + 1] == key[0]
        assert args[args.index("--grpc-port") + 1] == "9002"
        service = services[key]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert service["spec"]["ports"][0] == {"name": "grpc-ext-proc", "port": 9002, "targetPort": "grpc",
                                               "appProtocol": "http2"}
        assert pod["spec"]["serviceAccountName"] == "my-modelyard-epp"
    # one picker's Service does not select the other's pods
    a, b = (services[k]["spec"]["selector"] for k in expected)
    assert a != b


def test_the_pickers_may_read_pods_and_pools_of_their_namespace_only(render):
    docs = render(*gateway_args())
    roles = component(docs, "Role", "endpoint-picker")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    granted = {(g, res, v) for rule in roles[0]["rules"] for g in rule["apiGroups"] for res in rule["resources"]
               for v in rule["verbs"]}
    assert {v for g, res, v in granted} == {"get", "list", "watch"}
    assert {(g, res) for g, res, _ in granted} == {
        ("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
        ("inference.networking.x-k8s.io", "inferenceobjectives"),
        ("inference.networking.x-k8s.io", "inferencemodelrewrites")}
    [cluster_role] = component(docs, "ClusterRole", "endpoint-picker")  # its /metrics' authentication
    assert {r["resources"][0] for r in cluster_role["rules"]} == {"tokenreviews", "subjectaccessreviews"}
    assert all(r["verbs"] == ["create"] for r in cluster_role["rules"])
    for doc in docs:
        if doc["kind"] != "HTTPRoute":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_an_httproute_per_model_from_the_gateway_to_its_pool(render):
    routes = {r["metadata"]["name"]: r for r in by_kind(render(*gateway_args()), "HTTPRoute")}
    assert set(routes) == {"llama-3-2-1b", "m-3b-chat"}
    route = routes["llama-3-2-1b"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["metadata"]["namespace"] == "team-a"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gateway", "namespace": "gateways"}]
    pooled, other = route["spec"]["rules"]
    # the body's model, copied into this header by the Gateway's body-based router
    header = [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": "llama-3.2-1b"}]
    # OpenAI's routes through the pool and its picker (the bodies its parser reads) ...
    assert pooled["matches"] == [{"path": {"type": "PathPrefix", "value": p}, "headers": header}
                                 for p in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")]
    assert pooled["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                      "name": "llama-3-2-1b"}]
    # ... and the rest (Anthropic, Ollama) to the Model's own Service, past the picker
    assert other["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}, "headers": header}]
    assert other["backendRefs"] == [{"kind": "Service", "name": names.service_name("llama-3.2-1b"), "port": 8083}]
    assert "timeouts" not in pooled
    timed = by_kind(render(*gateway_args("--set", "gatewayInference.gateway.requestTimeout=300s")), "HTTPRoute")
    assert [r["timeouts"] for r in timed[0]["spec"]["rules"]] == [{"request": "300s"}] * 2
    # pickers without a Gateway: no route
    docs = render("--set-json", f"gatewayInference.models={json.dumps(MODELS)}")
    assert component(docs, "Deployment", "endpoint-picker") and not by_kind(docs, "HTTPRoute")


@pytest.mark.parametrize("args, message", [
    (["--set-json", f"gatewayInference.models={json.dumps(MODELS)}", "--set", "gatewayInference.gateway.name=gw"],
     "serves no gateway.networking.k8s.io/v1 HTTPRoute"),
    (["--set-json", f"gatewayInference.models={json.dumps(MODELS)}", "--set", "gatewayInference.endpointPicker.name=one"],
     "leave gatewayInference.endpointPicker.name empty"),
    (["--set-json", f'gatewayInference.models=[{{"name": "{"x" * 64}"}}]'], "longer than 63 characters"),
    (["--set-json", 'gatewayInference.models=[{"namespace": "a"}]'], "name"),
])
def test_what_cannot_be_deployed_fails_to_render_and_says_why(render, args, message):
    with pytest.raises(RenderError, match=message):
        render(*args)
