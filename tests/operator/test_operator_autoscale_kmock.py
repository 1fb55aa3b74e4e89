"""The real operator's autoscaler against KMock: it reads a pod's /metrics over HTTP and
writes replicas through the Model's scale subresource, with an Event that says why.

The pod's server is a stand-in on its own loopback address, answering /metrics with the
two gauges a real server exports (tests/cluster runs the real servers). KMock merges a
/scale patch into the Model as the API server would, but bumps no generation, so the
Deployment's part is tested on the real control plane (tests/cluster/test_scaling.py).
"""
import http.server
import threading

import pytest

from modelyard.operator import builders
from modelyard.operator.settings import OperatorSettings

from .conftest import make_model
from .kmock_cluster import Emulator, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.kmock(cls=Emulator)]
NAME = "smollm2-360m"
POD_IP = "127.23.0.1"  # loopback: Linux routes all of 127.0.0.0/8 to lo


@pytest.fixture
def pod_metrics():
    """A pod's /metrics on POD_IP:8083; set `load` to change what it reports."""
    state = {"load": (0, 0)}

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            running, waiting = state["load"]
            body = (f'modelyard_active_sequences{{model="{NAME}"}} {running}.0\n'
                    f'modelyard_queue_depth{{model="{NAME}"}} {waiting}.0\n'
                    f'modelyard_queue_depth{{model="other"}} 50.0\n').encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((POD_IP, 8083), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


async def scale_events(kubectl):
    return [e for e in await kubectl.events() if e["reason"] in ("ScaledUp", "ScaledDown")]


async def test_the_autoscaler_brings_replicas_into_bounds_then_follows_the_load(operator, kubectl, pod_metrics):
    # "other" has no spec.autoscaling: its replicas are the user's, whatever its load.
    other = make_model(replicas=1)
    other["metadata"]["name"] = "other"
    for model in (make_model(replicas=1, autoscaling={"minReplicas": 2, "maxReplicas": 3, "targetRequests": 2}),
                  other):
        await kubectl.create("models", model)
    jobs = await eventually(lambda: _two(kubectl.list("jobs")), what="the Jobs")
    for job in jobs:
        await kubectl.finish_job(job["metadata"]["name"])

    # Downloaded: 1 is below minReplicas, which the autoscaler fixes at once.
    await eventually(lambda: replicas(kubectl, NAME, 2), what="spec.replicas 2")
    [event] = await eventually(lambda: scale_events(kubectl), what="a ScaledUp event")
    assert (event["type"], event["reason"]) == ("Normal", "ScaledUp")
    assert event["message"] == "1 -> 2: minReplicas is 2 (0 requests in flight, target 2 per replica)"
    assert event["involvedObject"]["name"] == NAME

    # A ready pod of each Model, both on the stand-in: 4 decoding and 3 waiting for
    # smollm2-360m (7 / 2 -> 4, capped at 3), 50 waiting for the other.
    for name in (NAME, "other"):
        await kubectl.create("pods", ready_pod(await kubectl.get("models", name)))
    pod_metrics["load"] = (4, 3)
    await eventually(lambda: replicas(kubectl, NAME, 3), what="spec.replicas 3")
    messages = [e["message"] for e in await scale_events(kubectl)]
    assert "2 -> 3: 7 requests in flight, target 2 per replica" in messages, messages
    assert (await kubectl.get("models", "other"))["spec"]["replicas"] == 1
    assert all(e["involvedObject"]["name"] == NAME for e in await scale_events(kubectl))


async def replicas(kubectl, name, n):
    found = await kubectl.get("models", name)
    return found if found["spec"]["replicas"] == n else None


async def _two(listing):
    items = await listing
    return items if len(items) == 2 else None


def ready_pod(model):
    """A pod as the Deployment controller and the kubelet leave it: the server's labels, an IP, Ready."""
    settings = OperatorSettings()
    labels = builders.build_deployment(model, settings, source_hash="x")["spec"]["template"]["metadata"]["labels"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{model['metadata']['name']}-abc", "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "x"}]},
            "status": {"phase": "Running", "podIP": POD_IP, "conditions": [{"type": "Ready", "status": "True"}]}}
