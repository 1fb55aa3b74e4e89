"""The router's own key (`--api-key`, MODELYARD_API_KEY): the routes it answers itself (the
cluster-wide lists, /metrics) ask for it in each API's way and refuse in each API's shape;
requests it proxies carry the client's key to the pods, which check their own. The real app
in process (Falcon's test client), its state fed by hand, a stand-in pod behind it."""
from __future__ import annotations

import falcon.testing
import pytest

from router.inprocess import POD_KEY, app_client as _client

ROUTER_KEY = "router-key"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def keyed() -> falcon.testing.TestClient:
    return _client(ROUTER_KEY)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_router_key_its_lists_are_open():
    client = _client("")
    assert client.simulate_get("/v1/models").json["data"][0]["id"] == "tiny"
    assert client.simulate_get("/metrics").status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/mimik-ai/openai/v1/models", "/api/tags", "/api/ps",
                                  "/store/v1/models", "/api/engine/models", "/api/models", "/metrics"])
def test_its_own_routes_need_its_key(keyed, path):
    missing = keyed.simulate_get(path)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Missing API key" in missing.text
    assert keyed.simulate_get(path, headers=_bearer(ROUTER_KEY)).status_code == 200
    assert keyed.simulate_get(path, headers={"x-api-key": ROUTER_KEY}).status_code == 200
    assert keyed.simulate_get(path, headers=_bearer("wrong")).status_code in (401, 403)


def test_refusals_are_in_each_apis_shape(keyed):
    openai = keyed.simulate_get("/v1/models", headers=_bearer("wrong"))
    assert openai.status_code == 401
    assert openai.json == {"error": {"code": 401, "message": "Invalid API key", "type": "invalid_api_key"}}
    # mimOE's registry document: a wrong key is 403.
    store = keyed.simulate_get("/store/v1/models", headers=_bearer("wrong"))
    assert store.status_code == 403 and store.json == {"error": {"code": 403, "message": "Invalid API key"}}
    assert keyed.simulate_get("/api/tags").json["error"].startswith("Missing API key")  # Ollama's string
    assert keyed.simulate_get("/api/engine/models", headers=_bearer("x")).json == {
        "error": "Invalid API key", "detail": "Invalid API key"}


def test_probes_stay_open(keyed):
    assert keyed.simulate_get("/healthz").status_code == 200
    assert keyed.simulate_get("/").text == "Ollama is running"


def test_proxied_requests_carry_the_clients_key_to_the_pods(keyed):
    # The pod's key gets through without the router's: the pods are the judges.
    answer = keyed.simulate_post("/v1/chat/completions", json=CHAT, headers=_bearer(POD_KEY))
    assert answer.status_code == 200 and answer.json == {"model": "tiny"}
    # The router's key is not a Model's key.
    assert keyed.simulate_post("/v1/chat/completions", json=CHAT, headers=_bearer(ROUTER_KEY)).status_code == 401
    # POST /v1/models (pre-load a Model) is the Model's pods' too.
    assert keyed.simulate_post("/v1/models", json={"model": "tiny"}, headers=_bearer(POD_KEY)).status_code == 200
