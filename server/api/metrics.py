"""Prometheus metrics, on a registry of the app's own (so several apps can live in one test)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelyard.server.api.picker_metrics import PickerMetrics


TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("modelyard_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.request_duration = Histogram("modelyard_request_duration_seconds",
                                          "From a request's arrival to its response (a streamed "
                                          "response: to its first byte)", ["method", "route"],
                                          buckets=DURATION_BUCKETS, registry=r)
        self.average_rate = Gauge("modelyard_model_tokens_per_second",
                                  "Each loaded model's decode rate, averaged over its finished requests",
                                  ["model"], registry=r)
        self._rates: dict[str, tuple[int, float]] = {}  # model -> (tokens, seconds) decoded
        self.prompt_tokens = Counter("modelyard_prompt_tokens_total", "Prompt tokens processed",
                                     ["model"], registry=r)
        self.cached_tokens = Counter("modelyard_prompt_cached_tokens_total",
                                     "Prompt tokens reused from a slot's cache", ["model"], registry=r)
        self.generated_tokens = Counter("modelyard_generated_tokens_total", "Tokens generated",
                                        ["model"], registry=r)
        self.ttft = Histogram("modelyard_time_to_first_token_seconds",
                              "From request to the first generated token", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.tokens_per_second = Histogram("modelyard_tokens_per_second",
                                           "Decode rate of each finished request", ["model"],
                                           buckets=RATE_BUCKETS, registry=r)
        self.queue_depth = Gauge("modelyard_queue_depth", "Requests waiting for a slot",
                                 ["model"], registry=r)
        self.active_sequences = Gauge("modelyard_active_sequences", "Sequences being decoded",
                                      ["model"], registry=r)
        self.loaded_models = Gauge("modelyard_loaded_models", "Models in memory", registry=r)
        self.embedded_inputs = Counter("modelyard_embedding_inputs_total", "Inputs embedded",
                                       ["model"], registry=r)
        # Counted by the engine, per llama_decode: what a cancelled request still costs
        # shows here, where the generated-tokens count shows what clients received.
        self.decoded_tokens = Counter("modelyard_decoded_tokens_total",
                                      "Tokens put through llama_decode, by phase (prompt, generate)",
                                      ["model", "phase"], registry=r)
        # llama.cpp's own measure, taken when the engine loads: shows the cache type a model
        # really runs with, and what each token of context costs in memory.
        self.kv_cache_bytes_per_token = Gauge("modelyard_kv_cache_bytes_per_token",
                                              "Bytes one token takes in a model's KV cache (all "
                                              "layers), by cache type", ["model", "type"], registry=r)
        self._kv_cache_types: dict[str, str] = {}  # model -> its gauge's type label
        self.engine_restarts = Counter("modelyard_engine_restarts_total",
                                       "Runner processes that stopped without being asked (crash, "
                                       "kill, hang); the next request starts a new one", ["model"], registry=r)

    def record_generation(self, model: str, gen) -> None:
        """Token counts and timings of a finished Generation."""
        self.prompt_tokens.labels(model).inc(gen.prompt_tokens)
        self.cached_tokens.labels(model).inc(gen.cached_tokens)
        self.generated_tokens.labels(model).inc(gen.completion_tokens)
        if gen.t_first is not None:
            self.ttft.labels(model).observe(gen.t_first - gen.t_submit)
        rate = gen.tokens_per_second
        if rate:
            self.tokens_per_second.labels(model).observe(rate)
            # the average of a model's rate: all its decoded tokens over all their time
            tokens, seconds = self._rates.get(model, (0, 0.0))
            tokens, seconds = tokens + gen.completion_tokens - 1, seconds + (gen.completion_tokens - 1) / rate
            self._rates[model] = (tokens, seconds)
            self.average_rate.labels(model).set(tokens / seconds)

    def totals(self) -> tuple[int, int]:
        """(HTTP requests served, tokens generated) since the start, for the status routes."""
        def total(counter) -> int:
            return int(sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total")))
        return total(self.requests), total(self.generated_tokens)

    def forget_model(self, model: str) -> None:
        self._rates.pop(model, None)
        for g in (self.queue_depth, self.active_sequences, self.average_rate):  # per-model gauges
            try:
                g.remove(model)
            except KeyError:
                pass
        kv_type = self._kv_cache_types.pop(model, None)
        if kv_type is not None:
            self.kv_cache_bytes_per_token.remove(model, kv_type)

    def set_kv_cache(self, model: str, kv_type: str, bytes_per_token: int) -> None:
        """A loaded engine's cache type and llama.cpp's measure of a token's bytes in it."""
        old = self._kv_cache_types.pop(model, None)
        if old is not None:
            self.kv_cache_bytes_per_token.remove(model, old)
        self._kv_cache_types[model] = kv_type
        self.kv_cache_bytes_per_token.labels(model, kv_type).set(bytes_per_token)


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
