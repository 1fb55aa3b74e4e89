"""The gauges the Gateway API Inference Extension's endpoint picker reads, under vLLM's names.

The picker (EPP) scrapes /metrics on each pod of an InferencePool and, with no engine
configuration and no engine-type pod label, reads vLLM's series (GAIE v1.5.0,
pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go): the queue, the running
requests, the KV cache's use, the LoRA adapters and the cache's shape. It reads Gauge and Counter
samples only (an untyped one counts as 0), so each is a gauge. Every value is what the engine
reported after its last step: a scrape does no file I/O and never waits on an engine.
"""
from __future__ import annotations

import time

from prometheus_client.core import GaugeMetricFamily

from modelyard.server.shared.facts import GENERATIVE_KINDS

LABEL = "model_name"  # vLLM's label for the served model


class PickerMetrics:
    """A collector over the model manager's loaded generative models: their engines are
    llama/remote.py's RemoteScheduler, which has the queue, the KV cells and the adapters."""

    def __init__(self, manager):
        self.manager = manager
        self._adapter_ids: dict[str, str] = {}  # adapter file -> its id in the store
        self._lora_since: dict[tuple, float] = {}  # model's lora label values -> when first seen

    def collect(self):
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Requests waiting for a slot", labels=[LABEL])
        running = GaugeMetricFamily("vllm:num_requests_running", "Requests being decoded", labels=[LABEL])
        usage = GaugeMetricFamily("vllm:kv_cache_usage_perc",
                                  "KV cache use, 0 to 1: cells holding running requests' tokens over all "
                                  "cells of the context", labels=[LABEL])
        lora = GaugeMetricFamily("vllm:lora_requests_info",
                                 "LoRA adapters of running and waiting requests (comma lists of adapter ids); "
                                 "the value is when this set was first seen (Unix time)",
                                 labels=[LABEL, "max_lora", "running_lora_adapters", "waiting_lora_adapters"])
        cache = GaugeMetricFamily("vllm:cache_config_info",
                                  "The KV cache's shape: llama.cpp's cache is cells of one token, so a block "
                                  "is one cell and the blocks are the context's cells",
                                  labels=[LABEL, "block_size", "num_gpu_blocks"])
        seen = set()
        for item in self.manager.loaded():
            engine = item.engine
            if item.kind not in GENERATIVE_KINDS:  # embedders and ONNX models: no queue, no KV cache
                continue
            name = item.id
            waiting.add_metric([name], engine.queue_depth)
            running.add_metric([name], engine.active)
            cells = engine.kv_cells
            usage.add_metric([name], min(1.0, engine.kv_cells_used / cells) if cells else 0.0)
            files_running, files_waiting = engine.adapter_files()
            values = (name, str(engine.slot_count), self._ids(name, files_running), self._ids(name, files_waiting))
            seen.add(values)
            lora.add_metric(list(values), self._lora_since.setdefault(values, time.time()))
            cache.add_metric([name, "1", str(cells)], 1)
        for gone in set(self._lora_since) - seen:  # only the current set's series is kept
            del self._lora_since[gone]
        yield from (waiting, running, usage, lora, cache)

    def _ids(self, model_id: str, files: tuple[str, ...]) -> str:
        """A comma list of the adapters' ids: the names clients send as `model`, which the
        picker's LoRA affinity matches. The store is read only for a file not seen before."""
        if any(f not in self._adapter_ids for f in files):
            store = self.manager.store
            for adapter_id in store.adapters_of(model_id):
                self._adapter_ids[str(store.file_path(adapter_id))] = adapter_id
        return ",".join(self._adapter_ids.get(f, f) for f in files)
