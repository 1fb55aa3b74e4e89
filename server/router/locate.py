"""Where each API family puts the model in a request, and the conversation prefix that
prefix-aware balancing hashes: pure functions over one table.

The table maps URI templates to where the model is (`ModelIn`: a body field, such as
OpenAI's `model` or Silicon's `model_id`; a path field, as KServe's and the registry's; or
a query parameter, as `GET /api/show?name=`). It is built in one place from the families'
declarations, and matched with Falcon's own CompiledRouter, as the pods match their routes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from falcon.routing import CompiledRouter

from modelyard.server.api.family import Family, ModelIn, Route


@dataclass(frozen=True)
class RouteInfo:
    """What the router needs of one declared route."""

    where: ModelIn
    family: Family
    route: Route

    @property
    def conversation(self) -> bool:
        return self.route.conversation


def routes(families=None) -> dict[str, RouteInfo]:
    """URI template -> where its model is, from the families' own declarations
    (api/<family>/family.py): the one place the router learns the families' routes."""
    if families is None:
        from modelyard.server.api.families import FAMILIES as families
    return {template: RouteInfo(route.model, family, route)
            for family in families for template, route in family.templates() if route.model is not None}


@dataclass(frozen=True)
class Located:
    template: str
    route: RouteInfo
    params: dict[str, str]

    @property
    def where(self) -> ModelIn:
        return self.route.where

    @property
    def conversation(self) -> bool:
        return self.route.conversation

    @property
    def family(self) -> Family:
        return self.route.family

    @property
    def declared(self) -> Route:
        """The family's declaration of the route."""
        return self.route.route


class Locator:
    """Matches a path to its template with Falcon's CompiledRouter."""

    def __init__(self, table: dict[str, RouteInfo] | None = None) -> None:
        self.table = routes() if table is None else table
        self._router = CompiledRouter()
        for template, info in self.table.items():
            self._router.add_route(template, _Entry(template, info))
        self._router.find("/")  # compile now, not on the first request

    def find(self, path: str) -> Located | None:
        found = self._router.find(path)
        if found is None:
            return None
        entry, _, params, _ = found
        return Located(entry.template, entry.info, params or {})


class _Entry:
    """A route's entry in Falcon's router (a resource without responders)."""

    def __init__(self, template: str, info: RouteInfo) -> None:
        self.template = template
        self.info = info


def model_of(located: Located, body: Any, query: dict[str, str]) -> str | None:
    """The model a request names, from where its route puts it; None if it names none."""
    where = located.where
    if where.path:
        return located.params.get(where.path) or None
    if isinstance(body, dict):
        for key in where.body:
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    if where.query:
        return query.get(where.query) or None
    return None


def adapters_of(body: Any) -> list[str]:
    """The LoRA adapters a request turns on with llama.cpp's per-request `lora: [{id, scale}]`
    (a scale of 0 is off), sorted: one set of adapters is one key, whatever their order."""
    lora = body.get("lora") if isinstance(body, dict) else None
    if not isinstance(lora, list):
        return []
    return sorted({a["id"] for a in lora if isinstance(a, dict) and isinstance(a.get("id"), str) and a["id"]
                   and a.get("scale", 1) != 0})


def balance_key(requested: str, body: Any, chars: int) -> str | None:
    """What CHWBL hashes for a conversation: the model as named (an adapter's id names its
    adapter), the adapters the body turns on, and the conversation's start; a pod that served
    it has both the adapter and the prefix warm. None without a conversation (least-loaded)."""
    prefix = conversation_prefix(body, chars)
    if not prefix:
        return None
    adapters = adapters_of(body)
    return "\n".join([requested, *(f"lora:{a}" for a in adapters), prefix])


def conversation_prefix(body: Any, chars: int) -> str:
    """The start of a conversation: its system text and first user message (chat bodies of
    every family), else the prompt (completions, Ollama's generate). Empty when the request
    has no conversation (embeddings), which then goes to the least-loaded pod."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    parts.append(_text(body.get("system")))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            parts.append(_text(message.get("content")))
            if message.get("role") == "user":
                break
    else:
        parts.append(_text(body.get("prompt")))
    return "\n".join(p for p in parts if p)[:chars]


def _text(value: Any) -> str:
    """Text of a message content: a string, or the text parts of a list (OpenAI, Anthropic)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) and isinstance(p.get("text"), str)
                       else (p if isinstance(p, str) else "") for p in value)
    return ""
