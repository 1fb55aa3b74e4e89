"""The router's settings: one typed object, each field with a MODELYARD_<NAME> variable."""
from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.server.router.balancer import DEFAULT_LOAD_FACTOR, DEFAULT_REPLICATION
from modelyard.server.shared import environ as environ_reader

DEFAULT_ROUTER_PORT = 8080


@dataclass
class RouterSettings:
    """Everything `modelyard router` can be told."""

    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=DEFAULT_ROUTER_PORT, metadata={"help": "port to listen on"})
    namespaces: list[str] = field(
        default_factory=list, metadata={"help": "namespaces whose Models it routes to (repeatable); "
                                                "none, or `all`: every namespace"})
    scale_wait: float = field(
        default=600.0, metadata={"help": "seconds a request waits for a Model's first ready pod "
                                         "(a Model scaled from zero, or pods still starting)"})
    ping_seconds: float = field(
        default=10.0, metadata={"help": "seconds between keep-alive events on a held stream"})
    connect_retries: int = field(
        default=2, metadata={"help": "other pods tried when a pod refuses the connection (or breaks off a generation before answering)"})
    prefix_chars: int = field(
        default=4096, metadata={"help": "characters of a conversation's start that pick its pod"})
    load_factor: float = field(
        default=DEFAULT_LOAD_FACTOR, metadata={"help": "a pod takes a conversation while its in-flight "
                                                       "requests are at most this times the mean"})
    replication: int = field(
        default=DEFAULT_REPLICATION, metadata={"help": "points per pod on the hash ring"})
    max_body_size: int = field(
        default=32 * 1024 * 1024, metadata={"help": "largest request body, in bytes (413 above)"})
    api_key: str = field(
        default="", repr=False, metadata={"help": "the router's own key, asked for on what it answers itself (the "
                                      "cluster-wide model lists and /metrics); requests it sends to a "
                                      "Model's pods carry that Model's key, which the pods check"})
    verbose: bool = field(default=False, metadata={"help": "log each routing decision"})

    def watched(self) -> list[str | None]:
        """The namespaces to watch; [None] is every namespace (one cluster-wide watch)."""
        if not self.namespaces or "all" in self.namespaces:
            return [None]
        return list(dict.fromkeys(self.namespaces))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "RouterSettings":
        """Defaults, then MODELYARD_* variables, then explicit overrides (CLI flags)."""
        values = environ_reader.read(cls, environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
