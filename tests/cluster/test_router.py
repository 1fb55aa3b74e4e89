"""The router on the real control plane: the chart installed, the real operator, a real
`modelyard serve` per inference pod on its 127.16.x.y address (podservers.py), and
`modelyard router` run here with the chart's router ServiceAccount's token and the args the
chart gives it, so the router's RBAC applies. The official clients talk to the router only."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import anthropic
import httpx
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
def router_config(control_plane, kubectl, release, tmp_path_factory) -> Path:
    """A kubeconfig with the chart's router ServiceAccount's token."""
    token = kubectl("create", "token", ROUTER_SA, "-n", RELEASE_NAMESPACE, "--duration", "2h").strip()
    return control_plane.token_kubeconfig(tmp_path_factory.mktemp("router") / "kubeconfig", token, MODELS_NAMESPACE)


def start_router(config: Path, log: Path) -> Router:
    process = Router(config, log, "--namespace", MODELS_NAMESPACE, "--ping-seconds", "1", "--scale-wait", str(TIMEOUT))
    process.wait_synced(60)
    return process


@pytest.fixture(scope="module")
def router(router_config, operator, tmp_path_factory):
    process = start_router(router_config, tmp_path_factory.mktemp("router-log") / "router.log")
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
    # KubeAI's bound, load + 1 <= (total + 1) / 2 * 1.25: the second is above it on the
    # conversation's pod and goes to the other; the third finds both above it and goes home.
    assert loads[home] == 2 and sum(loads.values()) == 3, loads
    for s in streams:
        s.close()


def _pods_busy(pod_servers, name: str) -> float:
    """Sequences decoding or waiting for a slot, over a Model's pods (their own gauges)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for pod in pod_servers.of(name):
        text = httpx.get(pod.url + "/metrics", headers=pod.headers(), timeout=5).text
        total += sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name in ("modelyard_active_sequences", "modelyard_queue_depth"))
    return total


def test_the_router_killed_mid_stream(router, router_config, routed, pod_servers, tmp_path):
    """SIGKILL one router with streams in flight: those streams break, nothing else does."""
    wait_until(lambda: _pods_busy(pod_servers, "routed") == 0, 30, "earlier streams to end", interval=0.2)
    victim = start_router(router_config, tmp_path / "victim.log")
    try:
        wait_until(lambda: _listed(victim, "routed"), TIMEOUT, "the second router to see routed's pods", interval=0.2)
        body = {"model": "routed", "messages": CHAT, "max_tokens": 300, "stream": True, "logit_bias": NO_EOS}
        headers = {"Authorization": f"Bearer {routed}"}
        with httpx.Client(timeout=60) as client:
            doomed = [client.stream("POST", victim.url + "/v1/chat/completions", json=body, headers=headers)
                      for _ in range(2)]
            # One stream of the other router, in flight through the kill; short enough to finish.
            survivor = client.stream("POST", router.url + "/v1/chat/completions", headers=headers,
                                     json={**body, "max_tokens": 40})
            responses = [s.__enter__() for s in (*doomed, survivor)]
            chunks = [r.iter_raw() for r in responses]
            for it in chunks:
                assert next(it)
            # The first bytes are each stream's opening chunk, sent before its prompt is read;
            # the pods' gauges count the three once their runners have taken a step.
            wait_until(lambda: _pods_busy(pod_servers, "routed") == 3, 30, "the three streams to run", interval=0.1)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            for it in chunks[:2]:
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # gone with the router
                    for _ in it:
                        pass
            rest = b"".join(chunks[2])
            assert rest.rstrip().endswith(b"data: [DONE]") and b'"error"' not in rest
            for r in responses:
                r.close()
    finally:
        victim.stop()
    # The pods saw their connections close and freed the two slots; they still serve, and the
    # other router instance answers the next request.
    wait_until(lambda: _pods_busy(pod_servers, "routed") == 0, 30, "the pods to free the slots", interval=0.2)
    assert all(pod.serving() for pod in pod_servers.of("routed"))
    client = openai.OpenAI(base_url=router.url + "/v1", api_key=routed, max_retries=0, timeout=60)
    assert client.chat.completions.create(model="routed", messages=CHAT, max_tokens=2).model == "routed"


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
