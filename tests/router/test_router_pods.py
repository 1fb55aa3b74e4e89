"""What the router does when a pod fails a request it was sent (server/router/pods.py): a
generation goes to another pod, anything else is a 502 in the API's own error shape that
names the pod (never a 500), and the pods' in-flight counts go back to 0. The real app in
process, its state fed by hand."""
from __future__ import annotations

import socket
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.server.router.settings import RouterSettings
from router.inprocess import POD, POD_KEY, app_client
from support.servers import free_port

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {POD_KEY}"}


class HangsUp:
    """A pod that reads each request and closes the connection without a word."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.server.accept()
            with conn:
                if conn.recv(65536):
                    self.requests += 1


@pytest.fixture(scope="module")
def rude() -> HangsUp:
    pod = HangsUp()
    yield pod
    pod.server.close()


@pytest.fixture(scope="module")
def hangs_up(rude) -> str:
    return rude.address


def _metric(client, name: str) -> float:
    text = client.simulate_get("/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _in_flight(client) -> float:
    return _metric(client, "modelyard_router_in_flight_requests")


def test_a_pod_that_hangs_up_before_answering_is_a_502_that_names_it(hangs_up):
    client = app_client(pods=(hangs_up,))
    r = client.simulate_post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 502, r.text
    message = r.json["error"]["message"]
    assert hangs_up in message and "broke off before answering" in message
    r = client.simulate_post("/v1/messages", json={**CHAT, "max_tokens": 8},
                             headers={"x-api-key": POD_KEY, "anthropic-version": "2023-06-01"})
    assert r.status_code == 502 and r.json["type"] == "error" and hangs_up in r.json["error"]["message"]
    assert _in_flight(client) == 0


def test_a_pod_that_refuses_the_connection_is_a_502_that_names_it():
    nobody = f"127.0.0.1:{free_port()}"
    client = app_client(pods=(nobody,))
    r = client.simulate_post("/api/chat", json=CHAT, headers=AUTH)
    assert r.status_code == 502, r.text
    assert "unreachable" in r.json["error"] and nobody in r.json["error"]
    assert _in_flight(client) == 0


def test_a_generation_goes_to_another_pod_after_one_hangs_up(hangs_up):
    client = app_client(pods=(hangs_up, POD))
    for i in range(8):  # CHWBL puts some of these conversations on the pod that hangs up first
        chat = {**CHAT, "messages": [{"role": "user", "content": f"conversation {i}"}]}
        r = client.simulate_post("/v1/chat/completions", json=chat, headers=AUTH)
        assert r.status_code == 200, r.text
    assert _metric(client, "modelyard_router_retries_total") > 0
    assert _in_flight(client) == 0


def test_what_may_not_be_replayed_is_not(hangs_up):
    """A POST that is not a generation (Ollama's create, a registry write) may have changed a
    pod before it broke off: a proxy does not send it again (RFC 9112 9.3.1)."""
    client = app_client(pods=(hangs_up, POD))
    codes = [client.simulate_post("/api/show", json={"model": "tiny"}, headers=AUTH).status_code for _ in range(4)]
    assert sorted(set(codes)) == [200, 502], codes  # least-loaded takes the two pods in turn
    assert _metric(client, "modelyard_router_retries_total") == 0


def test_a_request_that_broke_off_is_not_sent_again_while_its_model_wakes(rude):
    """A request for a Model at zero waits for its first pod and tries it again while the pod
    may not listen yet; once the request went out, that patience ends (it may have changed the
    pod). Without the guard it would be sent every 0.25 s until scale_wait."""
    client = app_client(woken=(rude.address,), settings=RouterSettings(scale_wait=3))
    before = rude.requests
    r = client.simulate_post("/api/show", json={"model": "tiny"}, headers=AUTH)
    assert r.status_code == 502 and rude.address in r.json["error"], r.text
    assert rude.requests - before == 1
