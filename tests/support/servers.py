"""A real `modelyard serve` (gunicorn) on loopback, in its own process group."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, store: Path, api_key: str | None = None, env: dict | None = None,
                 args: tuple = (), log_path: Path | None = None, host: str = "127.0.0.1",
                 port: int | None = None):
        self.store = Path(store)
        self.api_key = api_key
        self.extra_env = env or {}
        self.args = tuple(args)
        # Any loopback address: tests/cluster/podservers.py binds pods' 127.16.x.y addresses.
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path or self.store.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = False, timeout: float = 60) -> "Server":
        cmd = [sys.executable, "-m", "modelyard.server.cli", "serve",
               "--host", self.host, "--port", str(self.port), "--store", str(self.store),
               *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("MODELYARD_API_KEY", None)
        if self.api_key:
            env["MODELYARD_API_KEY"] = self.api_key
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_up("/readyz" if wait_ready else "/healthz", timeout)
        return self

    def wait_up(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not up on {path} after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def kill(self) -> None:
        """SIGKILL the master and its worker together, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def restart(self, **kwargs) -> "Server":
        self.stop()
        return self.start(**kwargs)
