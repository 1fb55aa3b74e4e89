"""Prometheus metrics, on a registry of the app's own (so several apps can live in one test)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelyard.server.api.picker_metrics import PickerMetrics
from modelyard.server.inference.metrics import InferenceMetrics


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The HTTP metrics, and the engines' (inference/metrics.py) on the same registry."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("modelyard_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.request_duration = Histogram("modelyard_request_duration_seconds",
                                          "From a request's arrival to its response (a streamed "
                                          "response: to its first byte)", ["method", "route"],
                                          buckets=DURATION_BUCKETS, registry=r)
        self.inference = InferenceMetrics(r)

    def totals(self) -> tuple[int, int]:
        """(HTTP requests served, tokens generated) since the start, for the status routes."""
        served = sum(s.value for m in self.requests.collect() for s in m.samples if s.name.endswith("_total"))
        return int(served), self.inference.generated_total()


class MetricsMiddleware:
    """Counts and times every request by its route template (not the raw path: ids would
    explode it)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def process_request(self, req, resp):
        req.context.started = time.monotonic()

    def process_response(self, req, resp, resource, req_succeeded):
        route = req.uri_template or "unmatched"
        self.metrics.requests.labels(req.method, route, resp.status_code if hasattr(resp, "status_code")
                                     else str(resp.status)[:3]).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            self.metrics.request_duration.labels(req.method, route).observe(time.monotonic() - started)


class ModelFacts:
    """Each loaded model's parameter count, context size and GPU layers, as its engine
    reported them at load (a scrape does no file I/O): whichever API loaded the model,
    with whatever settings."""

    def __init__(self, manager):
        self.manager = manager

    def collect(self):
        parameters = GaugeMetricFamily("modelyard_model_parameters", "A loaded GGUF model's parameter count",
                                       labels=["model"])
        context = GaugeMetricFamily("modelyard_model_context_size",
                                    "A loaded model's context, in tokens per request (slot)", labels=["model"])
        gpu_layers = GaugeMetricFamily("modelyard_model_gpu_layers", "Layers a loaded model offloads to the GPU",
                                       labels=["model"])
        for item in self.manager.loaded():
            if item.kind == "onnx":
                continue
            if item.engine.n_params:
                parameters.add_metric([item.id], item.engine.n_params)
            size = item.engine.context_size
            if size:
                context.add_metric([item.id], size)
            gpu_layers.add_metric([item.id], int((item.meta.get("gguf") or {}).get("initGpuLayerSize") or 0))
        yield from (parameters, context, gpu_layers)


class MetricsResource:
    def __init__(self, metrics: Metrics, manager=None):
        self.metrics = metrics
        if manager is not None:
            metrics.registry.register(ModelFacts(manager))
            metrics.registry.register(PickerMetrics(manager))

    def on_get(self, req, resp):
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.metrics.registry)
