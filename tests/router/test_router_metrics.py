"""The router's /metrics: requests per Model and status, the chosen pod, in flight (the held
requests, retries and scale-ups are driven on KMock: test_router_kmock.py)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router.inprocess import POD, POD_KEY, app_client

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def _samples(client) -> dict[tuple[str, tuple], float]:
    text = client.simulate_get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_requests_by_model_and_status_and_the_chosen_pod():
    client = app_client()
    for key in (POD_KEY, POD_KEY, "wrong"):
        client.simulate_post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert client.simulate_post("/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
    assert client.simulate_post("/api/engine/chat", json={"messages": []}).status_code == 400
    got = _samples(client)
    assert got[("modelyard_router_requests_total", (("code", "200"), ("model", "tiny")))] == 2
    assert got[("modelyard_router_requests_total", (("code", "401"), ("model", "tiny")))] == 1  # the pod's answer
    assert got[("modelyard_router_requests_total", (("code", "404"), ("model", "")))] == 1
    assert got[("modelyard_router_requests_total", (("code", "400"), ("model", "")))] == 1
    assert got[("modelyard_router_endpoint_requests_total", (("endpoint", POD), ("model", "tiny")))] == 3
    assert got[("modelyard_router_in_flight_requests", (("endpoint", POD), ("model", "tiny")))] == 0
