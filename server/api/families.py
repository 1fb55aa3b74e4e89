"""The list of API families, and the server's own routes (health, metrics, this list's
OpenAPI document). Adding a family is its folder and one line here."""
from __future__ import annotations

from modelyard.server.api import health, metrics, openapi
from modelyard.server.api.anthropic.family import FAMILY as ANTHROPIC
from modelyard.server.api.family import JSON, Context, Family, Op, Route
from modelyard.server.api.kserve.family import FAMILY as KSERVE
from modelyard.server.api.mullama.family import FAMILY as MULLAMA
from modelyard.server.api.ollama.family import FAMILY as OLLAMA
from modelyard.server.api.openai.family import FAMILY as OPENAI
from modelyard.server.api.silicon.family import FAMILY as SILICON
from modelyard.server.api.store.family import FAMILY as REGISTRY
from modelyard.server.http.errors import default_error_body
from modelyard.server.http.routes import Guard, RouteRule, RouteRules

API_FAMILIES: tuple[Family, ...] = (REGISTRY, OPENAI, ANTHROPIC, KSERVE, OLLAMA, MULLAMA, SILICON)


def _server_resources(ctx: Context) -> dict:
    return {
        "/healthz": health.Live({"status": "ok"}),
        "/readyz": health.Ready(ctx.manager, {"status": "ready"}, {"status": "loading"}),
        "/metrics": metrics.MetricsResource(ctx.metrics, ctx.manager),
        "/openapi.json": openapi.OpenApi(openapi.build_document(ctx.families, ctx.version)),
    }


# Probes and scrapers carry no key: these are open.
SERVER = Family(
    name="server",
    prefixes=("",),
    resources=_server_resources,
    routes=(
        Route("/healthz", Guard.OPEN, ops=(
            Op("get", "Liveness", responses={200: {JSON: {"type": "object"}}}, errors=()),)),
        Route("/readyz", Guard.OPEN, ops=(
            Op("get", "Readiness: the --preload models are loaded",
               responses={200: {JSON: {"type": "object"}}, 503: {JSON: {"type": "object"}}}, errors=()),)),
        Route("/metrics", Guard.OPEN, ops=(
            Op("get", "Prometheus metrics", responses={200: {"text/plain": {"type": "string"}}}, errors=()),)),
        Route("/openapi.json", Guard.OPEN, ops=(
            Op("get", "This document", responses={200: {JSON: {"type": "object"}}}, errors=()),)),
    ),
)

FAMILIES: tuple[Family, ...] = (*API_FAMILIES, SERVER)


def route_rules(families=FAMILIES) -> RouteRules:
    """Each route's guard and error shape, by URI template (and by prefix for paths that match
    no route), for the auth and error layers of the server and of the cluster router."""
    rules = RouteRules(RouteRule(Guard.KEY, default_error_body))
    for family in families:
        for template, route in family.templates():
            rules.add(template, RouteRule(route.guard, family.error_body, family.bad_key_status))
        for prefix in family.error_prefixes:
            rules.add_prefix(prefix, RouteRule(Guard.KEY, family.error_body, family.bad_key_status))
    return rules
