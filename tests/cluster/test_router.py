"""The router on the real control plane: the chart installed, the real operator, a real
`modelyard serve` per inference pod on its 127.16.x.y address (podservers.py), and
`modelyard router` run here with the chart's router ServiceAccount's token and the args the
chart gives it, so the router's RBAC applies. The official clients talk to the router only."""
from __future__ import annotations

import threading

import anthropic
import ollama
import openai
import pytest
import yaml

from router.process import Router, kill_mid_stream

from .kubetools import MODELS_NAMESPACE, RELEASE_NAMESPACE, wait_until
from .podservers import NO_EOS

ROUTER_SA = "modelyard-router"  # the chart's router ServiceAccount for a release named modelyard
TIMEOUT = 180  # seconds: two shared cores run the control plane, the operator and the servers
CHAT = [{"role": "user", "content": "Say hello."}]


def model(name: str, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": name},
        "spec": {"kind": "llm", "source": {"url": f"https://models.example/{name}.gguf"},
                 "gguf": {"initContextSize": 1024}, "resources": {"requests": {"cpu": "100m"}}, **spec},
    })


@pytest.fixture(scope="module")
def router(control_plane, kubectl, release, operator, tmp_path_factory):
    token = kubectl("create", "token", ROUTER_SA, "-n", RELEASE_NAMESPACE, "--duration", "2h").strip()
    folder = tmp_path_factory.mktemp("router")
    config = control_plane.token_kubeconfig(folder / "kubeconfig", token, MODELS_NAMESPACE)
    process = Router(config, folder / "router.log", "--namespace", MODELS_NAMESPACE, "--ping-seconds", "1",
                     "--scale-wait", str(TIMEOUT))
    process.wait_synced(60)
    yield process
    process.stop()
    print(process.log()[-10000:])


def _key(kubectl, name: str) -> str:
    import base64

    secret = kubectl.get("secret", f"{name}-api-key")
    return base64.b64decode(secret["data"]["key"]).decode()


@pytest.fixture(scope="module")
def routed(router, kubectl, pod_servers):
    """Model `routed`, two pods, each a real server; its key."""
    pod_servers.serve("routed", "dozy")
    kubectl.apply(model("routed", replicas=2))
    pod_servers.wait_serving("routed", 2, TIMEOUT)
    wait_until(lambda: len(router.per_endpoint("routed")) == 0 and _listed(router, "routed"), TIMEOUT,
               "the router to see routed's pods", interval=0.2)
    yield _key(kubectl, "routed")
    kubectl("delete", "model", "routed", "-n", MODELS_NAMESPACE, "--wait=false")


def _listed(router, name: str) -> bool:
    return any(m.model == f"{name}:latest" for m in ollama.Client(host=router.url).ps().models)


def test_the_official_clients_reach_the_model_through_the_router(router, routed):
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=routed, max_retries=0, timeout=60)
    assert client.chat.completions.create(model="routed", messages=CHAT, max_tokens=3).model == "routed"
    assert {c.model for c in client.chat.completions.create(model="routed", messages=CHAT, max_tokens=3,
                                                            stream=True)} == {"routed"}
    claude = anthropic.Anthropic(base_url=router.url, api_key=routed, max_retries=0, timeout=60)
    assert claude.messages.create(model="routed", max_tokens=3, messages=CHAT).model == "routed"
    with claude.messages.stream(model="routed", max_tokens=3, messages=CHAT) as stream:
        assert stream.get_final_message().model == "routed"
    llama = ollama.Client(host=router.url, headers={"Authorization": f"Bearer {routed}"})
    assert llama.chat(model="routed", messages=CHAT, options={"num_predict": 3}).model.startswith("routed")
    assert list(llama.chat(model="routed", messages=CHAT, options={"num_predict": 3}, stream=True))[-1].done
    assert "routed" in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="absent", messages=CHAT, max_tokens=3)


def test_a_conversation_sticks_under_the_bound_and_spills_above(router, routed):
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=routed, max_retries=0, timeout=60)
    chat = [{"role": "system", "content": "A sticky conversation."}, {"role": "user", "content": "One."}]
    before = router.per_endpoint("routed")
    for turn in range(3):
        client.chat.completions.create(model="routed", messages=chat, max_tokens=2)
        chat += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"Turn {turn}."}]
    after = router.per_endpoint("routed")
    [home] = [e for e in after if after[e] != before.get(e, 0)]
    streams = [client.chat.completions.create(model="routed", messages=chat, max_tokens=300, stream=True,
                                              logit_bias=NO_EOS) for _ in range(3)]
    for s in streams:
        next(iter(s))
    loads = router.in_flight("routed")
    # Two on the conversation's pod, then the third above the bound (2 > 3/2 * 1.25) on the other.
    assert loads[home] == 2 and sum(loads.values()) == 3, loads
    for s in streams:
        s.close()


def test_scale_from_zero(router, kubectl, pod_servers):
    kubectl.apply(model("dozy", replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 1,
                                                          "scaleDownDelaySeconds": 600}))
    try:
        wait_until(lambda: (kubectl.get("models", "dozy").get("status") or {}).get("phase") == "Pending"
                   and any(m.id == "dozy" for m in openai.OpenAI(base_url=router.url + "/v1", api_key="x")
                           .models.list()), TIMEOUT, "dozy downloaded, at zero replicas")
        key = _key(kubectl, "dozy")
        answers: list[str] = []
        asking = threading.Thread(target=lambda: answers.append(openai.OpenAI(
            base_url=router.url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT).chat.completions.create(
                model="dozy", messages=CHAT, max_tokens=3).model))
        asking.start()
        wait_until(lambda: kubectl.get("models", "dozy")["spec"].get("replicas") == 1, 30,
                   "the router to scale dozy to one", interval=0.2)
        asking.join(TIMEOUT)
        assert answers == ["dozy"]
        assert router.metric("modelyard_router_scale_from_zero_total", model="dozy") == 1
    finally:
        kubectl("delete", "model", "dozy", "-n", MODELS_NAMESPACE, "--wait=false")


def test_a_pod_killed_mid_stream(router, routed, pod_servers):
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=routed, max_retries=0, timeout=60)
    kill_mid_stream(router, pod_servers, client, "routed", NO_EOS)
    # kwok keeps the pod Ready (nothing probes it): its refused connections send each
    # request to the other pod.
    for i in range(3):
        assert client.chat.completions.create(model="routed", messages=[{"role": "user", "content": f"n{i}"}],
                                              max_tokens=2).model == "routed"
