"""The real router between the official clients and real servers on loopback, KMock as the
API server. One router, the pods' servers and KMock are shared by the module; tests that
break a pod come last."""
from __future__ import annotations

import threading

import anthropic
import httpx
import ollama
import openai
import pytest

from cluster.kubetools import wait_until
from cluster.podservers import NO_EOS

from router.process import kill_mid_stream

from .conftest import KEY

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def tiny(cluster, pod_servers, router):
    """Model `tiny` with two ready pods, each served by a real server."""
    model = cluster.model("tiny", replicas=2)
    pod_servers.serve("tiny", "sleepy")
    pods = [cluster.pod(model), cluster.pod(model)]
    pod_servers.wait_serving("tiny", 2)
    for pod in pods:
        cluster.ready(pod)
    _eventually(lambda: len(router.per_endpoint("tiny")) == 0 and _routable(router, "tiny"))
    return pods


def _routable(router, model: str) -> bool:
    r = httpx.get(router.url + "/api/ps", timeout=5)
    return any(m["name"] == f"{model}:latest" for m in r.json()["models"])


def _eventually(check, timeout: float = 30, what: str = "a condition"):
    return wait_until(check, timeout, what, interval=0.05)


def _openai(router) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_openai_client_reaches_the_model(router, tiny):
    client = _openai(router)
    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0)
    assert answer.model == "tiny" and answer.choices[0].message.content is not None
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0,
                                                 stream=True))
    assert chunks and all(c.model == "tiny" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer.choices[0].message.content
    assert sum(router.per_endpoint("tiny").values()) == 2


def test_anthropic_and_ollama_clients_reach_the_model(router, tiny):
    claude = anthropic.Anthropic(base_url=router.url, api_key=KEY, max_retries=0, timeout=60)
    message = claude.messages.create(model="tiny", max_tokens=4, messages=CHAT)
    assert message.model == "tiny"
    with claude.messages.stream(model="tiny", max_tokens=4, messages=CHAT) as stream:
        assert stream.get_final_message().model == "tiny"
    llama = ollama.Client(host=router.url, headers={"Authorization": f"Bearer {KEY}"})
    assert llama.chat(model="tiny", messages=CHAT, options={"num_predict": 4}).model.startswith("tiny")
    parts = list(llama.generate(model="tiny:latest", prompt="Hi", options={"num_predict": 4}, stream=True))
    assert parts[-1].done


def test_the_key_is_the_pods_to_check(router, tiny):
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
    r = httpx.post(router.url + "/v1/messages", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                   json={"model": "tiny", "max_tokens": 2, "messages": CHAT}, timeout=60)
    assert r.status_code == 200, r.text


def test_unknown_model_is_each_apis_own_404(router, tiny):
    with pytest.raises(openai.NotFoundError) as exc:
        _openai(router).chat.completions.create(model="nope", messages=CHAT)
    assert exc.value.body["message"] == "Model 'nope' not found" and exc.value.body["type"] == "not_found_error"
    claude = anthropic.Anthropic(base_url=router.url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=2, messages=CHAT)
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=router.url).chat(model="nope", messages=CHAT)
    assert err.value.status_code == 404 and "nope" in err.value.error
    r = httpx.post(router.url + "/api/engine/chat", json={"messages": CHAT})
    assert r.status_code == 400 and "model_id" in r.json()["detail"]


def test_lists_answer_for_the_whole_cluster(router, tiny):
    ids = [m.id for m in _openai(router).models.list()]
    assert "tiny" in ids
    assert {m.model for m in ollama.Client(host=router.url).list().models} >= {"tiny:latest"}
    store = httpx.get(router.url + "/store/v1/models").json()["data"]
    assert {"id": "tiny", "kind": "llm", "readyToUse": True} .items() <= next(m for m in store if m["id"] == "tiny").items()
    assert httpx.get(router.url + "/store/v1/models?kind=onnx").json() == {"data": []}
    silicon = httpx.get(router.url + "/api/engine/models").json()
    assert next(m for m in silicon if m["id"] == "tiny")["is_loaded"] is True
    assert httpx.get(router.url + "/mimik-ai/openai/v1/models").json()["data"][0]["object"] == "model"


def test_a_finetunes_adapter_goes_to_its_base_models_pods(router, cluster, tiny):
    """The router watches FineTunes: their adapter's name routes to the base Model's pods (which
    answer for it; these pods have no such adapter, so theirs is the 404)."""
    body = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": "tune"},
            "spec": {"baseModel": "tiny", "dataset": {"path": "d.jsonl"}}}
    cluster.kmock.call(cluster.k.create("finetunes", body))
    cluster.kmock.call(cluster.k.patch("finetunes", "tune", {"status": {"adapter": "tiny-tuned"}}, sub="status"))
    client = _openai(router)
    before = router.metric("modelyard_router_requests_total", model="tiny", code="404")

    def routed_to_tiny() -> bool:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="tiny-tuned", messages=CHAT, max_tokens=2)
        return router.metric("modelyard_router_requests_total", model="tiny", code="404") > before
    _eventually(routed_to_tiny, 10, "the adapter routed to tiny's pods")


def test_a_conversation_sticks_to_its_pod_then_spills(router, tiny):
    client = _openai(router)
    chat = [{"role": "system", "content": "You are a sticky test."}, {"role": "user", "content": "Turn one."}]
    before = router.per_endpoint("tiny")
    for turn in range(4):
        client.chat.completions.create(model="tiny", messages=chat, max_tokens=2)
        chat += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": f"Turn {turn + 2}."}]
    after = router.per_endpoint("tiny")
    used = {e for e in after if after[e] != before.get(e, 0)}
    assert len(used) == 1, (before, after)
    [home] = used
    # KubeAI's bound on 2 pods: a pod takes one more while its load + 1 <= (total + 1) / 2 * 1.25.
    def stream():
        s = client.chat.completions.create(model="tiny", messages=chat, max_tokens=200, stream=True,
                                           logit_bias=NO_EOS)
        next(iter(s))
        return s

    def loads() -> tuple[float, float]:
        in_flight = router.in_flight("tiny")
        return in_flight.get(home, 0), sum(in_flight.values()) - in_flight.get(home, 0)

    streams = [stream()]
    assert loads() == (1, 0)  # an idle group: home
    streams.append(stream())
    assert loads() == (1, 1)  # home's 1 + 1 > 2 / 2 * 1.25: the next pod on the ring
    streams.append(stream())
    assert loads() == (2, 1)  # both above 3 / 2 * 1.25: the first on the ring, home
    for s in streams:
        s.close()
    _eventually(lambda: router.metric("modelyard_router_in_flight_requests", model="tiny") == 0, 10)


def test_a_client_that_hangs_up_cancels_the_pods_generation(router, tiny, pod_servers):
    with httpx.stream("POST", router.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "tiny", "messages": CHAT, "max_tokens": 400, "stream": True,
                            "logit_bias": NO_EOS}, timeout=60) as r:
        next(r.iter_raw())
    # The router closed the pod's connection, and the pod freed the slot.
    _eventually(lambda: router.metric("modelyard_router_in_flight_requests", model="tiny") == 0, 10)
    for pod in pod_servers.of("tiny"):
        _eventually(lambda: _pod_metric(pod, "modelyard_active_sequences") == 0, 10, "slot freed")


def _pod_metric(pod, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(pod.url + "/metrics", headers=pod.headers(), timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_scale_from_zero_holds_the_request_until_a_pod_is_ready(router, cluster, pod_servers, tiny):
    model = cluster.model("sleepy", replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2})
    _eventually(lambda: any(m["id"] == "sleepy" for m in httpx.get(router.url + "/store/v1/models").json()["data"]))
    results: dict[str, object] = {}

    def ask_streaming() -> None:
        stream = _openai(router).chat.completions.create(model="sleepy", messages=CHAT, max_tokens=3, stream=True)
        results["stream"] = [c.model for c in stream]

    def ask() -> None:
        results["plain"] = _openai(router).chat.completions.create(model="sleepy", messages=CHAT, max_tokens=3).model

    threads = [threading.Thread(target=ask_streaming), threading.Thread(target=ask)]
    for t in threads:
        t.start()
    # The router scaled the Model through its scale subresource, and holds both requests.
    _eventually(lambda: (cluster.get("models", "sleepy")["spec"].get("replicas") == 1), 10, "scaled to one")
    _eventually(lambda: router.metric("modelyard_router_held_requests", model="sleepy") == 2, 10, "held")
    assert router.metric("modelyard_router_scale_from_zero_total", model="sleepy") >= 1
    # Ready at once, as kwok marks pods, before its server listens: the held requests keep
    # trying the new pod until it answers.
    cluster.pod(cluster.get("models", "sleepy"), ready=True)
    for t in threads:
        t.join(60)
    assert results["plain"] == "sleepy"
    assert results["stream"] and set(results["stream"]) == {"sleepy"}
    assert router.metric("modelyard_router_held_requests", model="sleepy") == 0
    del model


def test_a_pod_killed_mid_stream_ends_the_stream_and_the_next_request_goes_elsewhere(router, tiny, pod_servers):
    client = _openai(router)
    kill_mid_stream(router, pod_servers, client, "tiny", NO_EOS)
    retries = router.metric("modelyard_router_retries_total", model="tiny")
    # The dead pod is still Ready in the API (nothing probes it here): its connections are
    # refused, and each request that hashes to it is sent to the other pod.
    for i in range(4):
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"n{i}"}],
                                                max_tokens=2)
        assert answer.model == "tiny"
    assert router.metric("modelyard_router_retries_total", model="tiny") > retries

