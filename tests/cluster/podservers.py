"""Pods that really serve: a real `modelyard serve` for each inference pod kwok runs.

kwok gives every pod an address in 127.16.0.0/16 (controlplane.py's `--cidr`), and on
Linux the whole of 127.0.0.0/8 is loopback: a process can bind 127.16.0.7:8083 without
any set-up. So this harness plays the container runtime for the Models' inference
pods. It watches the pods of a namespace (by the server component's label), and for
each pod that has an IP it starts the pod's own container command:

  - `modelyard serve` with the container's args, its `--host` replaced by the pod's IP
    (the port stays the container's, 8083) and its `--store` by a local store;
  - the container's plain env values (MODELYARD_INIT_CONTEXT_SIZE, ...) and its API key,
    read from the Secret its `secretKeyRef` names, as the kubelet would;
  - the model that its `--preload` names, registered in the local store on first use
    from a small generated GGUF (tests/inference/modelgen.py: random weights, a real
    tokenizer and chat template), so a Model of any name serves.

A pod that is deleted (deletionTimestamp set) or gone gets its server stopped with
SIGTERM, as the kubelet would. Nothing listens beyond loopback.

kwok marks a pod Ready as soon as it is scheduled, before the real server has loaded
its model, so a test waits for `wait_serving()` (every pod's /readyz answers) before
it sends traffic. `kill(pod)` SIGKILLs one pod's server, as a crash would.

Use it through the `pod_servers` fixture of conftest.py (one per test module):

    def test_x(operator, pod_servers, kubectl):
        pod_servers.serve("my-model")              # only the pods of the Models named here
        kubectl.apply(MODEL)                       # a Model in MODELS_NAMESPACE
        [server] = pod_servers.wait_serving("my-model", 1)
        httpx.post(f"{server.url}/v1/chat/completions", headers=server.headers(), ...)
"""
from __future__ import annotations

import base64
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import kubernetes

from modelyard.operator.names import LABEL_MODEL, base_name
from support.servers import Server

from .kubetools import wait_until

logger = logging.getLogger(__name__)

SERVER_SELECTOR = "app.kubernetes.io/component=server"
_POLL = 0.25  # seconds between two lists of the pods: a new pod serves within about that
# The container args that name a local resource: replaced by the harness.
_REPLACED = ("--host", "--store")


@dataclass
class PodServer:
    """One pod and the real server that plays its container."""

    pod: str  # the pod's name
    model: str  # the model id its --preload names (the Model's metadata.name)
    ip: str
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self) -> dict[str, str]:
        """The pod's own API key, as `Authorization: Bearer`."""
        return self.server.headers()

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def serving(self) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


class PodServers:
    """Starts and stops a real server per inference pod of `namespace`; see the module's doc."""

    def __init__(self, kubeconfig: Path, namespace: str, workdir: Path,
                 model_file: Callable[[str], Path]) -> None:
        self.namespace = namespace
        self.workdir = workdir
        self.store = workdir / "store"
        self.model_file = model_file
        self._api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kubeconfig)))
        self._guard = threading.Lock()
        self._servers: dict[str, PodServer] = {}  # pod uid -> its server
        self._registered: set[str] = set()
        self._wanted: set[str] = set()  # the base names (modelyard.dev/model labels) served
        self._stopping: dict[str, threading.Thread] = {}  # pod IP -> the stop of its last server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod servers", daemon=True)
        self.errors: list[str] = []  # what went wrong in the background, for a failing test

    # ---- what tests call ----------------------------------------------------------------
    def start(self) -> "PodServers":
        self.store.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def serve(self, *models: str) -> "PodServers":
        """Play the containers of these Models' pods (other Models' pods are left alone)."""
        with self._guard:
            self._wanted.update(base_name(m) for m in models)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._guard:
            servers, self._servers = list(self._servers.values()), {}
        for pod in servers:
            pod.server.stop()
        for stopping in list(self._stopping.values()):
            stopping.join(30)

    def of(self, model: str) -> list[PodServer]:
        """The servers of a Model's live pods (started, maybe still loading)."""
        with self._guard:
            return sorted((s for s in self._servers.values() if s.model == model), key=lambda s: s.pod)

    def wait_serving(self, model: str, count: int, timeout: float = 120) -> list[PodServer]:
        """Exactly `count` pods of `model` whose servers answer /readyz (the model is loaded)."""
        def ready() -> list[PodServer] | None:
            servers = self.of(model)
            if len(servers) == count and all(s.serving() for s in servers):
                return servers
            return None
        return wait_until(ready, timeout, f"{count} serving pod(s) of {model}", on_timeout=self.report)

    def kill(self, pod: str) -> None:
        """SIGKILL the server of one pod (by the pod's name): its container crashed."""
        for server in self._all():
            if server.pod == pod:
                server.server.kill()
                return
        raise KeyError(pod)

    def report(self) -> str:
        """Each server's state and the tail of its log, and the harness's own errors."""
        lines = [f"harness errors: {self.errors}"] if self.errors else []
        for s in self._all():
            lines.append(f"--- {s.pod} ({s.model}) at {s.url}: alive={s.alive()} ---")
            lines.append(s.server.log()[-2000:] if s.server.log_path.exists() else "(no log)")
        return "\n".join(lines)

    # ---- the loop -----------------------------------------------------------------------
    def _all(self) -> list[PodServer]:
        with self._guard:
            return list(self._servers.values())

    def _run(self) -> None:
        while not self._stop.wait(_POLL):
            try:
                self._sync()
            except Exception as e:  # an API hiccup: next round; recorded for a failing test
                self.errors.append(repr(e))
                logger.exception("pod servers: a round failed")

    def _sync(self) -> None:
        pods = self._api.list_namespaced_pod(self.namespace, label_selector=SERVER_SELECTOR).items
        with self._guard:
            live = {p.metadata.uid: p for p in pods
                    if (p.metadata.labels or {}).get(LABEL_MODEL) in self._wanted
                    and p.status and p.status.pod_ip and not p.metadata.deletion_timestamp}
            gone = [self._servers.pop(uid) for uid in list(self._servers) if uid not in live]
            new = [pod for uid, pod in live.items() if uid not in self._servers]
            for pod in new:
                self._servers[pod.metadata.uid] = self._prepare(pod)
        for server in gone:
            # kwok hands a freed IP to the next pod: its server waits for this stop.
            stopping = threading.Thread(target=server.server.stop, daemon=True)
            self._stopping[server.ip] = stopping
            stopping.start()
        for pod in new:
            server = self._servers.get(pod.metadata.uid)
            if server is not None:
                threading.Thread(target=self._start, args=(server,), daemon=True).start()

    def _prepare(self, pod: Any) -> PodServer:
        """The server that runs this pod's container, not started yet."""
        container = pod.spec.containers[0]
        args = list(container.args or [])
        if args[:1] == ["serve"]:
            args = args[1:]
        kept, model = [], ""
        it = iter(args)
        for arg in it:
            if arg in _REPLACED:
                next(it, None)
                continue
            if arg == "--preload":
                model = next(it, "")
                kept += [arg, model]
                continue
            kept.append(arg)
        port = next((p.container_port for p in container.ports or []), 8083)
        kept = _drop_option(kept, "--port")
        env = {e.name: e.value for e in container.env or [] if e.value is not None and e.name != "HOME"}
        api_key = self._secret_value(container)
        log = self.workdir / f"{pod.metadata.name}.log"
        server = Server(self.store, api_key=api_key, env=env, args=tuple(kept), log_path=log,
                        host=pod.status.pod_ip, port=port)
        return PodServer(pod.metadata.name, model, pod.status.pod_ip, server)

    def _start(self, pod: PodServer) -> None:
        previous = self._stopping.get(pod.ip)
        if previous is not None:
            previous.join(30)
        try:
            if pod.model:
                self._register(pod.model)
            pod.server.start(wait_ready=False, timeout=60)
        except Exception as e:
            self.errors.append(f"{pod.pod}: {e!r}")
            logger.exception("pod servers: %s did not start", pod.pod)

    def _register(self, model: str) -> None:
        """Put the model in the local store once (registered where its file lies: no copy)."""
        from modelyard.server.registry.store import Store

        with self._guard:
            if model in self._registered:
                return
            self._registered.add(model)
            Store(self.store).register_path(model, self.model_file(model), kind="llm",
                                            fields={"version": "1.0.0"})

    def _secret_value(self, container: Any) -> str | None:
        for e in container.env or []:
            if e.name == "MODELYARD_API_KEY" and e.value_from and e.value_from.secret_key_ref:
                ref = e.value_from.secret_key_ref
                secret = _read_when_there(lambda: self._api.read_namespaced_secret(ref.name, self.namespace))
                data = (secret.data or {}) if secret else {}
                if ref.key in data:
                    return base64.b64decode(data[ref.key]).decode()
        return None


def _drop_option(args: list[str], option: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        else:
            out.append(arg)
    return out


def _read_when_there(read: Callable[[], Any], timeout: float = 10) -> Any:
    """The operator creates a Model's Secret just before its Deployment: wait a moment for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except kubernetes.client.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Logit biases that keep the pod model from ending a generation (qwen2's end tokens), for
# tests that need requests to stay in flight.
NO_EOS = {"151643": -100, "151645": -100}


def make_pod_model(cache: Path | None = None) -> Path:
    """The generated GGUF every pod serves: the tests' usual chat model (llama-shaped,
    random weights, qwen2's vocabulary and chat template, F16).

    Making it takes about 30 s of a shared core (the 151k-token vocabulary), and it is the
    same bytes every time, so it is kept in `cache` (default: MODELYARD_CACHE/test-models)
    under the hash of the generators' source: a change to one of them makes a new one."""
    from inference import modelgen

    if cache is None:
        cache = Path(os.environ.get("MODELYARD_CACHE") or Path.home() / ".cache" / "modelyard") / "test-models"
    digest = modelgen.source_digest()[:12]
    path = cache / f"pod-chat-qwen2-f16-{digest}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{path.name}.{os.getpid()}.part"
        modelgen.make_llama_gguf(partial, vocab="qwen2", qtype="F16")
        os.replace(partial, path)  # whole or absent, whoever else makes it at the same time
    return path
