"""Registries on loopback. `Registry`: a real OCI distribution registry, Debian's
`docker-registry` (the CNCF distribution registry, 2.8), the kind of registry `ollama push`
and `ollama pull` talk to; tools/image_tools.sh installs it, and tests skip with the reason
when it is missing. `HostileRegistry`: one of the tests' own that lies as a test tells it."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# ---- a hostile registry of the tests' own ----------------------------------------------------

KEY = "1234"  # the egress tests' server key
AUTH = {"Authorization": f"Bearer {KEY}"}
SECRET = b"internal-secret-7f3a9c"  # what the tests' internal service answers; never in our answers
HOSTILE_HOST = "127.0.0.2"  # loopback, but not 127.0.0.1: egress tests allow it and nothing else
FILLER = 64 * 1024


@dataclass
class Reply:
    """One answer of the hostile registry. `body` is sent as it is; `stream` sends that many
    filler bytes (None: `body`); `length` is the Content-Length to declare (None: the true
    one, "" for none: the body then ends when the connection closes)."""

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    stream: int | None = None
    length: str | None = None
    sent: int = 0  # body bytes written before the client went away


class HostileRegistry:
    """An OCI registry stand-in on 127.0.0.2 that answers what a test sets: manifests whose
    sizes lie, blobs that do not match, endless bodies, redirects, upload Locations, token
    realms. Paths not set answer 404; every request is logged as (method, path)."""

    def __init__(self, host: str = HOSTILE_HOST):
        self.replies: dict[tuple[str, str], Reply] = {}
        self.log: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer((host, 0), _hostile_handler(self))
        self.server.daemon_threads = True
        self.host = f"{host}:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HostileRegistry":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set(self, method: str, path: str, reply: Reply | None = None, **fields) -> Reply:
        reply = reply or Reply(**fields)
        self.replies[(method, path)] = reply
        return reply

    def model(self, repository: str, tag: str, layers: list[tuple[str, bytes]],
              config: bytes | None = b'{"model_format":"gguf"}', sizes: dict | None = None,
              extra: list[dict] | None = None) -> dict:
        """Serve a manifest of `layers` (media type, bytes) and each blob as it is.
        `sizes`: media type -> the size the manifest declares instead of the true one;
        `extra`: layers added to the manifest as they are. Returns the manifest."""
        sizes = sizes or {}
        entries = []
        for media_type, data in layers:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            entries.append({"mediaType": media_type, "digest": digest,
                            "size": sizes.get(media_type, len(data))})
            self.set("GET", f"/v2/{repository}/blobs/{digest}", body=data)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": entries + (extra or [])}
        if config is not None:
            digest = "sha256:" + hashlib.sha256(config).hexdigest()
            manifest["config"] = {"mediaType": CONFIG_TYPE, "digest": digest, "size": len(config)}
            self.set("GET", f"/v2/{repository}/blobs/{digest}", body=config)
        self.set("GET", f"/v2/{repository}/manifests/{tag}", body=json.dumps(manifest).encode(),
                 headers={"Content-Type": MANIFEST_TYPE})
        return manifest

    def blob_path(self, repository: str, data: bytes) -> str:
        return f"/v2/{repository}/blobs/sha256:{hashlib.sha256(data).hexdigest()}"


MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"


def _hostile_handler(registry: HostileRegistry):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            registry.log.append((self.command, path))
            length = int(self.headers.get("Content-Length") or 0)
            while length > 0:  # an upload's body: read and dropped
                got = self.rfile.read(min(length, FILLER))
                if not got:
                    break
                length -= len(got)
            reply = registry.replies.get((self.command, path))
            if reply is None and self.command == "HEAD":
                reply = registry.replies.get(("GET", path))
            if reply is None:
                reply = Reply(status=404, body=b'{"errors":[{"code":"NOT_FOUND"}]}')
            size = reply.stream if reply.stream is not None else len(reply.body)
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            length = str(size) if reply.length is None else reply.length
            if length:
                self.send_header("Content-Length", length)
            else:
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            try:
                if reply.stream is None:
                    self.wfile.write(reply.body)
                    reply.sent += len(reply.body)
                    return
                chunk = b"\0" * FILLER
                while reply.sent < reply.stream:
                    piece = chunk[:reply.stream - reply.sent]
                    self.wfile.write(piece)
                    reply.sent += len(piece)
            except OSError:
                self.close_connection = True  # the client went away: what the tests want

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

    return Handler


def closed_port(host: str) -> int:
    """A port on `host` that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pull(server, name: str) -> httpx.Response:
    """/api/pull without streaming: one JSON answer (or a plain error before the stream)."""
    return httpx.post(f"{server.url}/api/pull", headers=AUTH, timeout=60,
                      json={"model": name, "insecure": True, "stream": False})


def listed(server) -> list[str]:
    r = httpx.get(f"{server.url}/api/tags", headers=AUTH)
    assert r.status_code == 200, r.text
    return [m["name"] for m in r.json()["models"]]


def leftovers(server, name: str) -> list[str]:
    """Files a failed pull left in the store (the model's folder, partials)."""
    from modelyard.server.shared import names

    folder = server.store / "models" / names.to_id(name)
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []
