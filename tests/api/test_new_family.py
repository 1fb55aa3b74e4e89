"""Adding an API family is its declaration and one entry in the list of families (issue 21):
this one, written here and nowhere else, is routed, guarded, answers errors in its own shape
and is in the OpenAPI document, with no change to app.py, http/ or the OpenAPI builder."""
from __future__ import annotations

import falcon.testing
import pytest

from modelyard.server.api.families import FAMILIES
from modelyard.server.api.family import JSON, Context, Family, ModelIn, Op, Route
from modelyard.server.app import create_app
from modelyard.server.http.routes import Guard
from modelyard.server.settings import Settings

KEY = "k"


class Echo:
    def __init__(self, ctx: Context):
        self.store = ctx.store

    def on_post(self, req, resp):
        body = req.get_media()
        self.store.get(body["model"])  # an unknown model is the store's 404, in this family's shape
        resp.media = {"echo": body["model"]}


def _error(code: int, message: str, kind: str | None = None) -> dict:
    return {"ok": False, "why": message, "status": code}


EXAMPLE = Family(
    name="example",
    prefixes=("/example/v1",),
    error_prefixes=("/example/v1",),
    error_body=_error,
    error_schema={"type": "object", "required": ["ok", "why"]},
    resources=lambda ctx: {"/echo": Echo(ctx), "/ping": Echo(ctx)},
    routes=(
        Route("/echo", Guard.KEY, model=ModelIn(body=("model",)), ops=(
            Op("post", "Echo a model's id", responses={200: {JSON: {"type": "object"}}}, errors=(401, 404)),)),
        Route("/ping", Guard.OPEN, ops=(Op("post", "Open to all", errors=()),)),
    ),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(Settings(store=tmp_path_factory.mktemp("store"), api_key=KEY), families=(*FAMILIES, EXAMPLE))
    return falcon.testing.TestClient(app, headers={"Host": "127.0.0.1"})


def test_a_new_family_is_guarded_by_its_declaration(client):
    r = client.simulate_post("/example/v1/echo", json={"model": "m"})
    assert r.status_code == 401 and r.json == {"ok": False, "why": r.json["why"], "status": 401}
    assert client.simulate_post("//example/v1/echo", json={"model": "m"}).status_code == 401
    # its open route needs no key (and reaches the resource: the store's 404 for 'm')
    r = client.simulate_post("/example/v1/ping", json={"model": "m"})
    assert r.status_code == 404 and r.json == {"ok": False, "why": "Model 'm' not found", "status": 404}


def test_a_new_family_answers_errors_in_its_own_shape(client):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = client.simulate_post("/example/v1/echo", json={"model": "nope"}, headers=auth)
    assert r.status_code == 404 and r.json == {"ok": False, "why": "Model 'nope' not found", "status": 404}
    r = client.simulate_get("/example/v1/unknown", headers=auth)
    assert r.status_code == 404 and r.json["ok"] is False


def test_a_new_family_is_in_the_openapi_document(client):
    doc = client.simulate_get("/openapi.json").json
    assert doc["paths"]["/example/v1/echo"]["post"]["tags"] == ["example"]
    assert doc["paths"]["/example/v1/echo"]["post"]["responses"]["404"]["content"][JSON]["schema"] == \
        EXAMPLE.error_schema


def test_a_family_whose_resources_and_routes_differ_does_not_start(tmp_path):
    """A resource without a declared route would be served with no guard of its own."""
    undeclared = Family(name="broken", prefixes=("/broken",), routes=EXAMPLE.routes[:1],
                        resources=lambda ctx: {"/echo": Echo(ctx), "/extra": Echo(ctx)})
    with pytest.raises(RuntimeError, match="do not match its declared routes"):
        create_app(Settings(store=tmp_path / "store", api_key=KEY), families=(*FAMILIES, undeclared))


def test_two_families_cannot_declare_one_route():
    from modelyard.server.api.families import route_rules

    twin = Family(name="twin", prefixes=("/example/v1",), routes=EXAMPLE.routes[:1], resources=EXAMPLE.resources)
    with pytest.raises(ValueError, match="two declarations of the route /example/v1/echo"):
        route_rules((EXAMPLE, twin))
