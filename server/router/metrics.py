"""The router's Prometheus series, in a registry of its own (one per app, none global)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("modelyard_router_requests", "Requests for a Model, by Model (empty: one the router does not "
                                "know) and the status answered (the pod's, or the router's own refusal)",
                                ["model", "code"], registry=self.registry)
        self.held = Gauge("modelyard_router_held_requests",
                          "Requests waiting for a Model's first ready pod", ["model"], registry=self.registry)
        self.in_flight = Gauge("modelyard_router_in_flight_requests",
                               "Requests in flight to each pod", ["model", "endpoint"], registry=self.registry)
        self.chosen = Counter("modelyard_router_endpoint_requests",
                              "Requests sent to each pod (the balancer's choices)", ["model", "endpoint"],
                              registry=self.registry)
        self.retries = Counter("modelyard_router_retries", "Requests sent again to another pod after a "
                               "refused connection, or a generation's pod broke off before answering", ["model"], registry=self.registry)
        self.scale_ups = Counter("modelyard_router_scale_from_zero", "Models scaled from zero to one by a request",
                                 ["model"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
