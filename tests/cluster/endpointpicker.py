"""The Gateway API Inference Extension's endpoint picker (GAIE v1.5.0's `cmd/epp`, built by
tools/gaie/build.sh) as a test's own process, and a client that speaks Envoy's `ext_proc` to it.

There is no Envoy here, so `ExtProc.pick` plays Envoy's part for one request: the request's
headers, then its whole body (end of stream), over the `envoy.service.ext_proc.v3` stream
(PyPI's envoy-data-plane stubs); the picker answers a headers response that sets
`x-gateway-destination-endpoint: ip:port` (GAIE's endpoint picker protocol, docs/proposals/
004-endpoint-picker-protocol), or an ImmediateResponse (503 when no pod is left).

The picker runs with the kubeconfig it is given (a ServiceAccount's token: the chart's RBAC
applies) and watches one InferencePool and its pods. Every listener it opens is on 127.0.0.1
(build.sh binds them), and it scrapes the pods' own addresses: kwok's 127.16.x.y.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.servers import free_port

from .controlplane import die_with_parent

DESTINATION = "x-gateway-destination-endpoint"  # the protocol's header
_HEALTH = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}, the whole message


def epp_binary() -> Path:
    """Where tools/gaie/build.sh puts the picker (it may not be built)."""
    script = Path(__file__).resolve().parents[2] / "tools" / "gaie" / "build.sh"
    done = subprocess.run(["bash", str(script), "--print"], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


@dataclass
class Picked:
    """What the picker told Envoy: a destination, or an immediate answer to the client."""

    endpoint: str | None = None
    status: int | None = None  # the ImmediateResponse's HTTP status
    body: bytes = b""  # the ImmediateResponse's body


class EndpointPicker:
    """The EPP process for one pool; ext_proc, health and metrics on free loopback ports."""

    def __init__(self, binary: Path, kubeconfig: Path, pool: str, namespace: str, log: Path,
                 refresh: str = "100ms") -> None:
        self.grpc_port, self.health_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = log
        env = {"KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", ""), "HOME": str(log.parent)}
        args = [
            str(binary), "--pool-name", pool, "--pool-namespace", namespace,
            "--grpc-port", str(self.grpc_port), "--grpc-health-port", str(self.health_port),
            "--metrics-port", str(self.metrics_port),
            # How often each pod's /metrics is read: a loaded pod shows within a few of these.
            "--refresh-metrics-interval", refresh,
            # Plain gRPC as a sidecar Envoy would use; no OpenTelemetry exporter, no pprof, and
            # metrics without TokenReviews (the test reads them on loopback).
            "--secure-serving=false", "--tracing=false", "--enable-pprof=false",
            "--metrics-endpoint-auth=false", "--v", "2",
        ]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        import grpc  # the `gateway` extra, as envoy_data_plane below: `make test` never imports it

        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def log(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def listening(self) -> set[str]:
        """The addresses its listening TCP sockets are bound to (Linux's /proc): what build.sh's
        change must keep to 127.0.0.1."""
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        addresses = set()
        for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    raw = bytes.fromhex(fields[1].split(":")[0][:width])
                    # /proc prints each 32-bit word of the address in the host's (little-endian) order
                    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
                    addresses.add(str(ipaddress.ip_address(b"".join(words))))
        return addresses

    def serving(self) -> bool:
        """The picker's own gRPC health check: SERVING once it has synced its pool."""
        import grpc

        assert self.alive(), f"the endpoint picker exited with {self.proc.returncode}:\n{self.log()}"
        with grpc.insecure_channel(f"127.0.0.1:{self.health_port}") as channel:
            check = channel.unary_unary(_HEALTH, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            try:
                return check(b"", timeout=2) == _SERVING
            except grpc.RpcError:
                return False

    def queue_sizes(self) -> dict[str, float]:
        """The picker's view of each pod's queue (its inference_pool_per_pod_queue_size gauge):
        the pods it knows, by name, with the waiting requests it last scraped from them."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {s.labels["model_server_pod"]: s.value for f in text_string_to_metric_families(text)
                if f.name == "inference_pool_per_pod_queue_size" for s in f.samples}

    def pick(self, body: dict[str, Any], path: str = "/v1/chat/completions", timeout: float = 30) -> Picked:
        """One request as Envoy hands it over: headers, then the whole body."""
        from envoy_data_plane.envoy.config.core.v3 import HeaderMap, HeaderValue
        from envoy_data_plane.envoy.service.ext_proc.v3 import (ExternalProcessorSyncStub, HttpBody,
                                                                 HttpHeaders, ProcessingRequest)

        raw = json.dumps(body).encode()
        headers = {":method": "POST", ":path": path, ":authority": "gateway.test", ":scheme": "http",
                   "content-type": "application/json", "content-length": str(len(raw))}
        messages = [
            ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=[
                HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]))),
            ProcessingRequest(request_body=HttpBody(body=raw, end_of_stream=True)),
        ]
        stub = ExternalProcessorSyncStub(self.channel)
        for response in stub.process(messages):
            if response.immediate_response is not None:
                answer = response.immediate_response
                return Picked(status=int(answer.status.code), body=answer.body)
            if response.request_headers is not None:
                mutation = response.request_headers.response.header_mutation
                for option in mutation.set_headers if mutation else []:
                    if option.header.key == DESTINATION:
                        return Picked(endpoint=(option.header.raw_value or option.header.value.encode()).decode())
        return Picked()

    def stop(self) -> None:
        self.channel.close()
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
