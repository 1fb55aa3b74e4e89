"""A real Kubernetes control plane on loopback, started the way controller-runtime's envtest does.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as local
processes from the binaries that tools/k8s/build.sh builds once per machine. kwok plays
the kubelets: nodes become Ready, pods are scheduled by the real scheduler and then
marked Running and Ready, Job pods complete, PVCs of its StorageClass are bound.
Nothing runs in a container and nothing listens beyond 127.0.0.1.

The API server has what a platform engineer's cluster has and envtest leaves out:
RBAC authorization, ServiceAccount tokens (TokenRequest, signed with a key of ours), the
default admission plugins, and an audit log.
"""
from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "tools" / "k8s" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

# The controllers the tests lean on, and the ones they need to stay quiet: the
# garbage collector (ownerReferences), Jobs, Deployments and ReplicaSets, the default
# ServiceAccount of each namespace (pod admission needs it), legacy ServiceAccount
# token Secrets, and the protection finalizers of PVCs and PVs (a deleted PVC goes
# once no pod uses it). No node lifecycle controller: kwok's nodes send no heartbeats.
CONTROLLERS = (
    "garbage-collector-controller",
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # HPAs that target a Model through its scale subresource (no metrics API here, so
    # they report AbleToScale but cannot compute a recommendation).
    "horizontal-pod-autoscaler-controller",
)

# Writes with their bodies (what the operator sent and got back), everything else with
# its metadata: who did which verb on what, and the answer's code.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
        {"level": "RequestResponse", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "Metadata"},
    ],
}

# How long a simulated download takes: long enough for the operator to see the Job
# active (phase Downloading) and read its progress, as it would a real one.
DOWNLOAD_SECONDS = 8
# What every simulated `modelyard fetch` container prints, served by kwok's kubelet
# API through the API server's pods/log: half of a 100 MB file.
FETCH_PROGRESS = {"size": 50_000_000, "totalSize": 100_000_000}
# What every simulated `modelyard train` container prints: step 3 of 6.
TRAIN_PROGRESS = {"step": 3, "totalSteps": 6, "epoch": 1, "loss": 1.25}


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so that a killed or
    timed-out pytest leaves no API server or etcd behind (Linux's PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binaries_dir() -> Path:
    """Where build.sh puts (or has put) the binaries of the pinned versions."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def missing_binaries(bindir: Path) -> list[str]:
    needed = [*BINARIES, "kwok-stages.yaml", "kwok-storage-class.yaml"]
    return [name for name in needed if not (bindir / name).exists()]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@dataclass
class ControlPlane:
    bindir: Path
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    apiserver_port: int = 0

    # --- paths ---------------------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (system:masters): for the tests and the controllers."""
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._make_pki()
            etcd_port = self._start_etcd()
            self._start_apiserver(etcd_port)
            self._write_kubeconfig(self.kubeconfig, user={
                "client-certificate": str(self.pki / "admin.crt"), "client-key": str(self.pki / "admin.key")})
            self._start_controllers()
            self._start_kwok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def check_alive(self) -> None:
        """Fail loudly, with its log, when a component died under a test."""
        for process in self.processes:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(3000)}" for p in self.processes)

    # --- pieces --------------------------------------------------------------------
    def _run(self, name: str, args: list[str]) -> Process:
        log = self.workdir / f"{name}.log"
        out = open(log, "ab")
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=self.workdir, preexec_fn=die_with_parent)
        out.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.pki, check=True, capture_output=True)

    def _make_pki(self) -> None:
        """A CA, the API server's serving certificate, the admin's client certificate and
        the ServiceAccount signing key pair; valid for two days."""
        self.pki.mkdir(exist_ok=True)
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                      "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=modelyard-test-ca",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._sign("apiserver", "/CN=kube-apiserver", "serverAuth",
                   "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                   "DNS:kubernetes.default.svc,IP:10.96.0.1")
        # system:masters: the cluster admin that the tests, helm and the controllers use.
        self._sign("admin", "/O=system:masters/CN=modelyard-test-admin", "clientAuth")
        self._openssl("genrsa", "-out", "sa.key", "2048")
        self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _sign(self, name: str, subject: str, usage: str, extra: str = "") -> None:
        ext = self.pki / f"{name}.ext"
        ext.write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       f"extendedKeyUsage={usage}\n{extra}\n")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                      "-out", f"{name}.csr", "-subj", subject)
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", ext.name)

    def _start_etcd(self) -> int:
        client, peer = free_port(), free_port()
        process = self._run("etcd", [
            str(self.bindir / "etcd"), "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            # A throw-away store on a shared machine: no fsync, as envtest's etcd.
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        _wait(lambda: _http_ok(f"http://127.0.0.1:{client}/health"), 60, "etcd to answer /health", process)
        return client

    def _start_apiserver(self, etcd_port: int) -> None:
        self.apiserver_port = free_port()
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        pki = self.pki
        process = self._run("kube-apiserver", [
            str(self.bindir / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.apiserver_port),
            "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--authorization-mode", "Node,RBAC",
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--allow-privileged=true",
            "--endpoint-reconciler-type", "none",
            # New nodes get the not-ready taint from this plugin and lose it through the
            # node lifecycle controller, which needs kubelet heartbeats: kwok's nodes
            # send none, so neither runs here.
            "--disable-admission-plugins", "TaintNodesByCondition",
            # Pod logs go to the node's address: kwok's nodes are 127.0.0.1.
            "--kubelet-preferred-address-types", "InternalIP",
            "--audit-policy-file", str(policy),
            "--audit-log-path", str(self.audit_log),
            "--audit-log-format", "json",
            "--audit-log-mode", "blocking",
            "--profiling=false",
            "--v", "1",
        ])
        context = self._ssl_context(client=True)
        _wait(lambda: _http_ok(f"{self.server}/readyz", context), 120, "kube-apiserver to be ready", process)

    def _ssl_context(self, client: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if client:
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def _write_kubeconfig(self, path: Path, user: dict[str, str], namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.server, "certificate-authority": str(self.ca)}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user", "namespace": namespace}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def token_kubeconfig(self, path: Path, token: str, namespace: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
        return self._write_kubeconfig(path, {"token": token}, namespace)

    def _start_controllers(self) -> None:
        common = ["--kubeconfig", str(self.kubeconfig), "--leader-elect=false",
                  "--bind-address", "127.0.0.1", "--secure-port", "0"]
        self._run("kube-controller-manager", [
            str(self.bindir / "kube-controller-manager"), *common,
            "--controllers", ",".join(CONTROLLERS),
            "--service-account-private-key-file", str(self.pki / "sa.key"),
            "--root-ca-file", str(self.ca),
            "--horizontal-pod-autoscaler-sync-period", "2s",
            "--v", "1",
        ])
        self._run("kube-scheduler", [str(self.bindir / "kube-scheduler"), *common, "--v", "1"])

    def _start_kwok(self) -> None:
        stages = self.workdir / "kwok-stages.yaml"
        documents = [d for d in yaml.safe_load_all((self.bindir / "kwok-stages.yaml").read_text()) if d]
        for stage in documents:
            if stage["metadata"]["name"] == "pod-complete":
                stage["spec"]["delay"] = {"durationMilliseconds": DOWNLOAD_SECONDS * 1000}
        # The log of the fetch container, in the CRI format that kubelets (and kwok) read.
        fetch_log = self.workdir / "fetch-container.log"
        fetch_log.write_text(f"2026-01-01T00:00:00.000000000Z stdout F {json.dumps(FETCH_PROGRESS)}\n")
        train_log = self.workdir / "train-container.log"
        train_log.write_text(f"2026-01-01T00:00:00.000000000Z stdout F {json.dumps(TRAIN_PROGRESS)}\n")
        documents.append({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "fetch"},
            "spec": {"logs": [{"containers": ["fetch"], "logsFile": str(fetch_log), "follow": False},
                              {"containers": ["train"], "logsFile": str(train_log), "follow": False}]},
        })
        stages.write_text(yaml.safe_dump_all(documents))
        # kwok v0.8.0 sometimes dies while it sets up its stage controllers ("fatal error:
        # concurrent map read and map write" in easycel's type registry, a race inside kwok):
        # a process that died in its first seconds is started again, up to three times.
        for _ in range(3):
            process = self._run_kwok(stages)
            deadline = time.monotonic() + 8
            while process.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if process.alive():
                return
            self.processes.remove(process)
        raise RuntimeError(f"kwok exited at start three times; its log: {process.log}")

    def _run_kwok(self, stages: Path) -> Process:
        kubelet_port = free_port()
        return self._run("kwok", [
            str(self.bindir / "kwok"), "--kubeconfig", str(self.kubeconfig), "--config", str(stages),
            "--manage-all-nodes=true",
            # Node and pod addresses stay on loopback, and so does kwok's stand-in for the
            # kubelet API (it would listen on every interface by default): the API server
            # connects to a node's address for pod logs, and nothing here may reach
            # beyond this machine.
            "--node-ip", "127.0.0.1", "--node-port", str(kubelet_port),
            "--server-address", f"127.0.0.1:{kubelet_port}", "--cidr", "127.16.0.0/16",
        ])


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(check: Any, timeout: float, what: str, process: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.tail()}")
        if check():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}:\n{process.tail()}")


def read_audit(path: Path) -> list[dict[str, Any]]:
    """The audit log's events, in order (a line being written is skipped)."""
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events

