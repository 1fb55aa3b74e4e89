"""What the cluster tests do with the real command-line tools: kubectl, helm, the operator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

OPERATOR_SA = "modelyard"  # the chart's ServiceAccount for a release named modelyard
RELEASE_NAMESPACE = "modelyard-system"
MODELS_NAMESPACE = "models"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{OPERATOR_SA}"


class CommandError(Exception):
    def __init__(self, args: list[str], code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{' '.join(args)} exited {code}:\n{stderr or stdout}")
        self.code, self.stdout, self.stderr = code, stdout, stderr


class Tool:
    """A binary bound to a kubeconfig: tool("get", "pods") -> its stdout."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.kubeconfig.parent)}
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and done.returncode:
            raise CommandError(argv, done.returncode, done.stdout, done.stderr)
        return done

    def __call__(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout


class Kubectl(Tool):
    def json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json"))

    def get(self, resource: str, name: str, namespace: str = MODELS_NAMESPACE) -> dict[str, Any] | None:
        done = self.run("get", resource, name, "-n", namespace, "-o", "json", check=False)
        if done.returncode:
            if "NotFound" in done.stderr:
                return None
            raise CommandError(["kubectl", "get", resource, name], done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def items(self, resource: str, namespace: str = MODELS_NAMESPACE, selector: str = "") -> list[dict[str, Any]]:
        args = [resource, "-n", namespace]
        if selector:
            args += ["-l", selector]
        return self.json(*args)["items"]

    def apply(self, manifest: str | Path, namespace: str = MODELS_NAMESPACE) -> str:
        if isinstance(manifest, Path):
            return self("apply", "-n", namespace, "-f", str(manifest))
        return self("apply", "-n", namespace, "-f", "-", input=manifest)


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
               on_timeout: Callable[[], str] | None = None) -> Any:
    """check()'s first truthy answer; a TimeoutError saying what was awaited otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    details = on_timeout() if on_timeout else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{details}")


class OperatorProcess:
    """`modelyard operator`, the installed command, as a local process with its own kubeconfig."""

    def __init__(self, kubeconfig: Path, log_path: Path, namespace: str = MODELS_NAMESPACE,
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.namespace = namespace
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        from .controlplane import die_with_parent

        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster configuration in a test
        log = open(self.log_path, "ab")
        command = Path(sys.executable).with_name("modelyard")
        self.process = subprocess.Popen(
            [str(command), "operator", "--namespace", self.namespace, "--liveness", ""],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """A crash: SIGKILL, no clean shutdown."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def audit_events(path: Path, user: str = OPERATOR_USER, since: float | None = None) -> list[dict[str, Any]]:
    """The audit log's completed requests by one user, optionally from a time.time() on."""
    from .controlplane import read_audit

    found = []
    for event in read_audit(path):
        if event.get("user", {}).get("username") != user:
            continue
        # A watch is logged when its response starts; everything else when it completes.
        if event.get("stage") not in ("ResponseComplete", "ResponseStarted"):
            continue
        if event.get("stage") == "ResponseStarted" and event.get("verb") != "watch":
            continue
        if since is not None and _timestamp(event["requestReceivedTimestamp"]) < since:
            continue
        found.append(event)
    return found


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef")
    if not ref:
        return f"{event['requestReceivedTimestamp']} {event['verb']} {event.get('requestURI')}"
    resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    status = event.get("responseStatus") or {}
    return (f"{event['requestReceivedTimestamp']} {event['verb']} {resource} {object_name(event)} "
            f"-> {status.get('code')} {status.get('message') or ''}").rstrip()


def _timestamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AuditTail:
    """New audit events since the last call: reads only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written waits for the next call
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def object_name(event: dict[str, Any]) -> str:
    """The name an audited request was about (a create's is in its body)."""
    ref = event.get("objectRef") or {}
    if ref.get("name"):
        return ref["name"]
    for key in ("responseObject", "requestObject"):
        name = ((event.get(key) or {}).get("metadata") or {}).get("name")
        if name:
            return name
    return ""
