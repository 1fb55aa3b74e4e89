"""A real OCI distribution registry on loopback: Debian's `docker-registry` (the CNCF
distribution registry, 2.8), the kind of registry `ollama push` and `ollama pull` talk to.
tools/image_tools.sh installs it; tests skip with the reason when it is missing."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from support.servers import free_port

BINARY = "docker-registry"

CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class Registry:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Registry":
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(CONFIG.format(root=self.folder / "data", port=self.port))
        self._log = open(self.folder / "registry.log", "ab")
        self.proc = subprocess.Popen([shutil.which(BINARY), "serve", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.folder / 'registry.log').read_text()}")
            try:
                if httpx.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("docker-registry did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()

    def manifest(self, repository: str, tag: str) -> dict:
        r = httpx.get(f"{self.url}/v2/{repository}/manifests/{tag}",
                      headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        r.raise_for_status()
        return r.json()
