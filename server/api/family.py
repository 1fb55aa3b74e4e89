"""How an API family declares itself: its prefixes, its error shape, how a wrong key answers,
and its routes, each with its guard, where its request names the model, and its OpenAPI
operations.

app.py, the auth and error layers, the OpenAPI document and the cluster router all read
these declarations; none of them names a family. Adding a family is a folder with a
`family.py` and one line in api/families.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from modelyard.server.http import sse
from modelyard.server.http.errors import default_error_body
from modelyard.server.http import jsonio
from modelyard.server.http.routes import ErrorBody, Guard

JSON = "application/json"
SSE = "text/event-stream"
OCTETS = "application/octet-stream"
NDJSON = "application/x-ndjson"

# The error body of mimOE's documents, the default shape, as a JSON schema.
DEFAULT_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}}}}}


# `{"error": "..."}`: Ollama's shape and the KServe protocol's.
MESSAGE_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def message_error_body(code: int, message: str, kind: str | None = None) -> dict:
    return {"error": message}


@dataclass(frozen=True)
class ModelIn:
    """Where a request names its model: a top-level field of its JSON body, a field of its
    URI template, or a query parameter (the first that is present wins)."""

    body: tuple[str, ...] = ()
    path: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class Streams:
    """When a route answers as a stream, and in which content type."""

    content_type: str = SSE
    # The body field that asks for a stream (None: the route always streams), and what its
    # absence means (Ollama's routes stream unless told not to).
    flag: str | None = "stream"
    default: bool = False

    def asked(self, body: Any) -> bool:
        if self.flag is None:
            return True
        value = body.get(self.flag) if isinstance(body, dict) else None
        return self.default if value is None else value is True


# (the error body in the family's shape, status, message) -> the event that ends a stream which
# broke half-way (the cluster router's, when a pod goes away mid-answer).
StreamError = Callable[[dict, int, str], bytes]


def default_stream_errors() -> dict[str, StreamError]:
    """An SSE `data:` event of the error body; an NDJSON line `{"error": message}` (Ollama's)."""
    return {SSE: lambda body, code, message: sse.frame(body),
            NDJSON: lambda body, code, message: jsonio.line({"error": message})}


GGUF_KINDS = ("llm", "vlm", "embed")


@dataclass(frozen=True)
class ClusterModel:
    """A Model of a cluster as the cluster router's lists show it (from the resource's spec and
    status, and the router's view of its pods): what a family's cluster list renders."""

    name: str
    kind: str = "llm"
    version: str = ""
    created_ms: int | None = None
    total_size: int | None = None
    sha256: str = ""
    gguf: dict | None = None
    onnx: dict | None = None
    downloaded: bool = False  # its file is in the cache: a pod serves it now, or once scaled up
    running: bool = False  # it has a ready pod
    in_flight: int = 0  # the router's requests in flight to its pods

    def record(self) -> dict[str, Any]:
        """As a registry record (the fields the registry's public view reads)."""
        meta: dict[str, Any] = {"id": self.name, "version": self.version, "kind": self.kind,
                                "createdAt": self.created_ms}
        if self.total_size is not None:
            meta["totalSize"] = self.total_size
        for section, value in (("gguf", self.gguf), ("onnx", self.onnx)):
            if value is not None:
                meta[section] = value
        if self.sha256:
            meta["files"] = {"model": {"sha256": self.sha256}}
        return meta


# (the cluster's Models, the request's query parameters) -> the body of a list route.
ClusterList = Callable[[list[ClusterModel], dict[str, str]], Any]


@dataclass(frozen=True)
class Op:
    """One OpenAPI operation of a route."""

    method: str
    summary: str
    body: type[BaseModel] | None = None
    body_type: str = JSON
    # status -> {content type: model or JSON schema}
    responses: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 404)
    params: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Route:
    """A URI template below each of the family's prefixes, and what it declares. `guard` has
    no default: every route says whether it needs the key."""

    path: str
    guard: Guard
    ops: tuple[Op, ...]
    model: ModelIn | None = None
    # The body is a conversation or a prompt that a pod's prefix cache may hold: the cluster
    # router keeps one conversation on one pod (prefix-aware balancing); other routes go to
    # the least-loaded pod.
    conversation: bool = False
    # The cluster router answers this route (GET) for the whole cluster from the Models'
    # status with this renderer, instead of sending it to one Model's pods.
    lists_models: ClusterList | None = None
    # The route answers as a stream (when asked): a request the cluster router holds while
    # its Model wakes up gets the family's keep-alive in that content type meanwhile.
    streams: Streams | None = None


@dataclass
class Context:
    """What resources are built from: the app's store, engines, settings and metrics."""

    store: Any
    dispatcher: Any
    manager: Any
    settings: Any
    metrics: Any
    version: str
    families: tuple = ()  # every family the app serves (the OpenAPI document lists them)


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    routes: tuple[Route, ...]
    # Context -> {route path: resource}; one resource serves the route under every prefix.
    resources: Callable[[Context], dict[str, object]]
    error_body: ErrorBody = default_error_body
    error_schema: dict = field(default_factory=lambda: DEFAULT_ERROR_SCHEMA)
    bad_key_status: int = 401
    # Paths under these (with no route of their own) answer errors in this family's shape.
    error_prefixes: tuple[str, ...] = ()
    # Falcon error handlers of the family: (exception class, handler).
    error_handlers: tuple[tuple[type, Callable], ...] = ()
    # Falcon sinks of the family: (prefix, sink factory).
    sinks: tuple[tuple[str, Callable[[], object]], ...] = ()
    # The keep-alive event of each content type the family streams in (none for NDJSON: a
    # line that is not an answer would break its clients).
    keepalives: dict[str, bytes] = field(default_factory=dict)
    # The event that ends a stream which broke half-way, per content type.
    stream_errors: dict[str, StreamError] = field(default_factory=default_stream_errors)

    def templates(self):
        """(full URI template, route) for each route under each prefix."""
        for prefix in self.prefixes:
            for route in self.routes:
                yield prefix + route.path, route


def model_param(name: str = "model_id", description: str = "The model id.") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}
