"""GAIE v1.5.0's real endpoint picker (EPP) on the real control plane, driven over ext_proc as
Envoy would drive it (endpointpicker.py): the operator's InferencePool for a Model with two pods,
each a real `modelyard serve` on its kwok address (127.16.x.y, podservers.py), and the picker
under the chart's picker ServiceAccount, watching that pool and scraping those pods' /metrics
(vLLM's gauge names, server/api/picker_metrics.py).

`make gateway-test` runs it (MODELYARD_GATEWAY_TEST=1, after tools/gaie/build.sh); `make test`
skips it: the picker is a Go build of its own, once per machine.
"""
from __future__ import annotations

import os
import threading

import httpx
import pytest
import yaml

from .endpointpicker import EndpointPicker, epp_binary
from .conftest import CHART
from .kubetools import MODELS_NAMESPACE, RELEASE_NAMESPACE, wait_until
from .podservers import NO_EOS
from .test_inference_pool import POOLS, install_crd, wait_pool_reason

pytestmark = [
    pytest.mark.skipif(os.environ.get("MODELYARD_GATEWAY_TEST") != "1", reason=(
        "the real endpoint picker runs in `make gateway-test` (MODELYARD_GATEWAY_TEST=1), which builds it "
        "and installs the `gateway` extra first")),
    # envoy-data-plane's generated models, on import
    pytest.mark.filterwarnings("ignore:Using `@model_validator`"),
]

MODEL = "picked"
TIMEOUT = 180  # seconds: two shared cores run the control plane, the operator and two servers
SCRAPE = 0.1  # seconds: the picker's --refresh-metrics-interval here
PICKER_SA = "modelyard-epp"  # the chart's picker ServiceAccount for a release named modelyard


@pytest.fixture(scope="module")
def pods(operator, kubectl, pod_servers):
    """The Model, its InferencePool (the operator's) and its two serving pods."""
    install_crd(kubectl)
    pod_servers.serve(MODEL)
    kubectl.apply(yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": MODEL},
        "spec": {"kind": "llm", "source": {"url": f"https://models.example/{MODEL}.gguf"}, "replicas": 2,
                 "inferencePool": True, "gguf": {"initContextSize": 2048},
                 "resources": {"requests": {"cpu": "100m"}}},
    }))
    servers = pod_servers.wait_serving(MODEL, 2, TIMEOUT)
    wait_until(lambda: kubectl.get(POOLS, MODEL), TIMEOUT, f"{MODEL}'s InferencePool",
               on_timeout=lambda: operator.log()[-5000:])
    # The picker will scrape and route to these addresses: loopback only.
    assert all(s.ip.startswith("127.") for s in servers), [s.ip for s in servers]
    yield servers
    kubectl("delete", "model", MODEL, "-n", MODELS_NAMESPACE, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="module")
def picker_kubeconfig(control_plane, kubectl, helm, release, tmp_path_factory):
    """The chart's picker for this Model (gatewayInference.models): its ServiceAccount's token, so
    the picker here runs with the RBAC the chart gives the one it deploys. (kwok "runs" that
    Deployment's pod; nothing listens for it.)"""
    chart = str(CHART)
    helm("upgrade", "modelyard", chart, "-n", RELEASE_NAMESPACE, "--reuse-values",
         "--set-json", f'gatewayInference.models=[{{"name": "{MODEL}"}}]')
    try:
        token = kubectl("create", "token", PICKER_SA, "-n", MODELS_NAMESPACE, "--duration", "2h").strip()
        yield control_plane.token_kubeconfig(tmp_path_factory.mktemp("epp-sa") / "kubeconfig", token,
                                             MODELS_NAMESPACE)
    finally:
        helm("upgrade", "modelyard", chart, "-n", RELEASE_NAMESPACE, "--reuse-values",
             "--set-json", "gatewayInference.models=[]")


@pytest.fixture(scope="module")
def picker(pods, picker_kubeconfig, tmp_path_factory):
    binary = epp_binary()
    if not binary.exists():
        pytest.fail(f"the endpoint picker is not built ({binary}): run `make gateway-test`", pytrace=False)
    epp = EndpointPicker(binary, picker_kubeconfig, MODEL, MODELS_NAMESPACE,
                         tmp_path_factory.mktemp("epp") / "epp.log", refresh=f"{int(SCRAPE * 1000)}ms")
    try:
        wait_until(epp.serving, 60, "the picker to sync its pool", on_timeout=epp.log)
        wait_until(lambda: len(epp.queue_sizes()) == 2, 60, "the picker to see both pods", on_timeout=epp.log)
        assert epp.listening() == {"127.0.0.1"}, epp.listening()  # ext_proc, health, metrics: loopback only
        yield epp
    finally:
        epp.stop()
        print(epp.log(20000))


def test_the_model_says_whether_its_picker_runs(picker, kubectl):
    """The chart's picker Deployment for this Model (kwok runs its pod): the InferencePool condition
    is True; with no picker pod left it says a Gateway cannot route to the Model, within a resync."""
    assert wait_pool_reason(kubectl, MODEL, "Created", 60)
    deployment = f"{MODEL}-epp"
    kubectl("scale", "deployment", deployment, "-n", MODELS_NAMESPACE, "--replicas", "0")
    try:
        c = wait_pool_reason(kubectl, MODEL, "PickerUnavailable", 60)
        assert c["status"] == "False" and "has no ready pod" in c["message"], c
    finally:
        kubectl("scale", "deployment", deployment, "-n", MODELS_NAMESPACE, "--replicas", "1")
    assert wait_pool_reason(kubectl, MODEL, "Created", 60)


def chat(text: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def endpoints(pods) -> set[str]:
    return {f"{s.ip}:8083" for s in pods}


def test_it_names_one_of_the_models_pods(picker, pods):
    picked = picker.pick(chat("Say hello.", max_tokens=3))
    assert picked.endpoint in endpoints(pods), (picked, picker.log())
    # Another API's body, at its own path: the picker parses OpenAI's completions too.
    assert picker.pick({"model": MODEL, "prompt": "Once", "max_tokens": 3}, "/v1/completions").endpoint \
        in endpoints(pods)


def test_what_its_openai_parser_reads_and_refuses(picker, pods):
    """GAIE v1.5.0's default parser knows OpenAI's paths by their suffix and takes any other path
    for /v1/completions (a `prompt`): Ollama's generate passes, while Ollama's chat and Anthropic's
    messages (no `prompt`) are refused with a 400 before any pod is picked. docs/kubernetes.md
    says how the chart's HTTPRoute sends those past the picker."""
    assert picker.pick({"model": MODEL, "prompt": "Once", "stream": False}, "/api/generate").endpoint in endpoints(pods)
    for path, body in [("/api/chat", chat("Hi.", stream=False)), ("/v1/messages", chat("Hi.", max_tokens=3)),
                       ("/api/embed", {"model": MODEL, "input": "Hi."})]:
        picked = picker.pick(body, path)
        assert picked.status == 400 and picked.endpoint is None, (path, picked)


def test_a_long_prompt_goes_where_it_went_before(picker, pods):
    # Both pods idle: the first pick of each prompt is a tie that the picker breaks at random,
    # the second follows the prefix it recorded. Six prompts: by chance alone, 1 in 64.
    wait_until(lambda: set(picker.queue_sizes().values()) == {0.0}, 30, "both pods idle")
    prompts = [f"Conversation {i}: " + " ".join(f"fact {i}.{j} is worth keeping." for j in range(120))
               for i in range(6)]
    first = [picker.pick(chat(p)).endpoint for p in prompts]
    again = [picker.pick(chat(p)).endpoint for p in prompts]
    assert set(first) <= endpoints(pods)
    assert again == first, picker.log()


def test_the_idle_pod_over_the_loaded_one(picker, pods):
    busy, idle = pods
    # Six long generations on one pod: four slots decode and two wait (the queue the picker
    # scores, with the KV cache they fill); the other pod has none.
    stop = threading.Event()

    def generate(i: int) -> None:
        body = chat(f"Story {i}.", max_tokens=1500, stream=True, logit_bias=NO_EOS)
        with httpx.stream("POST", f"{busy.url}/v1/chat/completions", headers=busy.headers(), json=body,
                          timeout=120) as r:
            for _ in r.iter_bytes():
                if stop.is_set():
                    return  # closing the stream cancels the generation

    workers = [threading.Thread(target=generate, args=(i,), daemon=True) for i in range(6)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: _queue(picker, busy) > 0, 60, "the picker to see the loaded pod's queue",
                   interval=SCRAPE, on_timeout=picker.log)
        picks = [picker.pick(chat(f"A new question {i}?")).endpoint for i in range(5)]
        assert picks == [f"{idle.ip}:8083"] * 5, (picks, picker.queue_sizes())
    finally:
        stop.set()
        for w in workers:
            w.join(60)


def _queue(picker: EndpointPicker, pod) -> float:
    """The waiting requests the picker last scraped from a pod (its series are named
    `<pod>-rank-<n>`, one per target port)."""
    return sum(v for name, v in picker.queue_sizes().items() if name.startswith(pod.pod + "-rank-"))


def test_no_ready_pod_503(picker, pods, kubectl):
    kubectl("patch", "model", MODEL, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", '{"spec": {"replicas": 0}}')
    picked = wait_until(lambda: (lambda p: p if p.status else None)(picker.pick(chat("Anyone?"))), 60,
                        "the picker to answer without a pod", on_timeout=picker.log)
    assert picked.status == 503 and picked.endpoint is None, picked


def test_the_model_deleted_under_the_picker(picker, kubectl, operator):
    """The pool goes with its Model (the garbage collector, through its owner reference) while the
    picker watches it: the picker stays up and answers every request at once, without a pod."""
    assert kubectl.get(POOLS, MODEL) and picker.serving()
    kubectl("delete", "model", MODEL, "-n", MODELS_NAMESPACE, "--wait=false")
    wait_until(lambda: kubectl.get(POOLS, MODEL) is None, TIMEOUT, "the pool to be garbage-collected")
    # The picker saw its pool go: its health check says so (a Gateway stops sending to it).
    wait_until(lambda: not picker.serving(), 30, "the picker to report its pool gone", on_timeout=picker.log)
    picked = wait_until(lambda: (lambda p: p if p.status else None)(picker.pick(chat("Still there?"))), 60,
                        "an immediate answer", on_timeout=picker.log)
    assert picked.status == 503 and picker.alive(), (picked, picker.log())
    assert operator.alive()
