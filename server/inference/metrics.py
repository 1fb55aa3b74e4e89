"""What the engines record for /metrics: tokens and timings per model, the runners' queues and
decode counts, the KV cache's cost, restarts and loaded models.

The Prometheus collectors live here, below the API layer, on the registry the app passes in
(api/metrics.py adds the HTTP ones and serves them all), so the manager, the dispatcher and
the runners call methods whose imports the import contracts can see. A manager or dispatcher
built without one (tests, tools) records into a registry of its own.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
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
        """Token counts and timings of a finished Generation (llama/streams.py)."""
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

    def record_embedding(self, model: str, inputs: int, tokens: int) -> None:
        self.embedded_inputs.labels(model).inc(inputs)
        self.prompt_tokens.labels(model).inc(tokens)

    def generated_total(self) -> int:
        return int(sum(s.value for m in self.generated_tokens.collect() for s in m.samples
                       if s.name.endswith("_total")))

    def engine_restarted(self, model: str) -> None:
        self.engine_restarts.labels(model).inc()

    def set_loaded(self, count: int) -> None:
        self.loaded_models.set(count)

    def set_kv_cache(self, model: str, kv_type: str, bytes_per_token: int) -> None:
        """A loaded engine's cache type and llama.cpp's measure of a token's bytes in it."""
        old = self._kv_cache_types.pop(model, None)
        if old is not None:
            self.kv_cache_bytes_per_token.remove(model, old)
        self._kv_cache_types[model] = kv_type
        self.kv_cache_bytes_per_token.labels(model, kv_type).set(bytes_per_token)

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

    def runner_gauges(self, model: str) -> "RunnerGauges":
        return RunnerGauges(self, model)


class RunnerGauges:
    """A model's queue, active and decoded-token metrics, fed from the counters its runner
    sends with each step. The labelled children are looked up once: this runs per token."""

    def __init__(self, metrics: InferenceMetrics, model: str):
        self.queue_depth = metrics.queue_depth.labels(model)
        self.active = metrics.active_sequences.labels(model)
        self.prompt = metrics.decoded_tokens.labels(model, "prompt")
        self.generate = metrics.decoded_tokens.labels(model, "generate")

    def update(self, before: tuple, now: tuple) -> None:
        if now[0] != before[0]:
            self.queue_depth.set(now[0])
        if now[1] != before[1]:
            self.active.set(now[1])
        if now[2] != before[2]:
            self.prompt.inc(now[2] - before[2])
        if now[3] != before[3]:
            self.generate.inc(now[3] - before[3])
