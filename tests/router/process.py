"""`modelyard router` as a test's own process: the KMock tier (tests/router) and the real
control plane (tests/cluster/test_router.py) both start it this way."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.servers import free_port


class Router:
    """`modelyard router` in its own process."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelyard.server.cli", "router", "--host", "127.0.0.1",
                 "--port", str(self.port), *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_synced(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).json().get("synced"):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.log())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a series' samples whose labels include `labels`."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def per_endpoint(self, model: str, series: str = "modelyard_router_endpoint_requests_total") -> dict[str, float]:
        """endpoint -> value of a per-pod series of one Model (by default: requests sent there)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return {s.labels["endpoint"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == series and s.labels.get("model") == model}

    def in_flight(self, model: str) -> dict[str, float]:
        return self.per_endpoint(model, "modelyard_router_in_flight_requests")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def kill_mid_stream(router: Router, pod_servers, client, model: str, no_eos: dict) -> None:
    """Start a long OpenAI stream through the router, SIGKILL the server of the pod it went to
    after the first chunk, and check that the stream ends with OpenAI's error event."""
    import openai
    import pytest

    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "A long story."}],
                                            max_tokens=400, stream=True, logit_bias=no_eos)
    chunks = iter(stream)
    next(chunks)
    [victim] = [e for e, n in router.in_flight(model).items() if n == 1]
    pod = next(p for p in pod_servers.of(model) if victim.startswith(p.ip + ":"))
    pod_servers.kill(pod.pod)
    with pytest.raises(openai.APIError, match="broke off"):
        for _ in chunks:
            pass
