"""SIGKILL of the whole server (gunicorn master and worker) in the middle of uploads, pulls and
pushes, 20 times: after each restart on the same store nothing half-made is listed, every
listed model's file hashes to what is recorded, no temporary file is left or listed, the
transfer then succeeds, and the registry never holds a manifest whose blobs it lacks.

The moment of each kill is chosen, not timed: the client of an upload stops sending after N
bytes and the registry stand-in (an OCI registry of the test's own, on loopback) stops
serving or reading after N bytes, then each says so, and the test kills the server there.
The stand-in keeps blobs per repository, as distribution does, and accepts any manifest
without checking its blobs: so only the server's order (every blob, then the manifest) keeps
a killed push from leaving a manifest that names a missing blob.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelyard.server.registry import oci
from modelyard.server.shared import names
from support.modelfiles import make_gguf
from support.servers import Server

pytestmark = pytest.mark.slow

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIZE = 1 << 20
TEMPLATE = b"{{ .System }} {{ .Prompt }}"
CONFIG = b'{"model_format":"gguf"}'
BOUNDARY = "kill-transfers-boundary"
WAIT = 30  # seconds a stall may take to be reached; a test that waits this long has failed


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the moment of a kill -------------------------------------------------------------------


@dataclass
class Stall:
    """Where a transfer stops until the test has killed the server: after `at` bytes of the
    body of the first request `method path` (a path ending in '/' matches its prefix)."""

    method: str
    path: str
    at: int = 0
    digest: str | None = None  # an upload's: the PUT whose ?digest= names it
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str, query: str) -> bool:
        prefix = self.path.endswith("/") and path.startswith(self.path)
        return (method == self.method and (path == self.path or prefix)
                and (self.digest is None or f"digest={self.digest}" in query.replace("%3A", ":")))

    def hold(self) -> None:
        self.reached.set()
        self.release.wait(WAIT)


def stalled_body(data: bytes, stall: Stall):
    """A request body that stops after `stall.at` bytes (the rest follows the release; the
    terminating chunk of a chunked body with it)."""
    if stall.at:
        yield data[:stall.at]
    stall.hold()
    if data[stall.at:]:
        yield data[stall.at:]


# ---- a registry stand-in --------------------------------------------------------------------


class Standin:
    """Just enough of the distribution API for pull and push: manifests and blobs by
    repository, monolithic uploads (POST, then PUT ?digest=) whose digest is checked."""

    def __init__(self):
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.stall: Stall | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take_stall(self, method: str, target: str) -> Stall | None:
        path, _, query = target.partition("?")
        with self.lock:
            if self.stall and self.stall.matches(method, path, query):
                stall, self.stall = self.stall, None
                return stall
        return None

    def add_model(self, repository: str, layers: list[tuple[str, bytes]], tag: str = "latest") -> str:
        """Serve a model made of `layers` (media type, bytes); returns the name to pull."""
        blobs = self.blobs.setdefault(repository, {})
        entries = []
        for media_type, data in layers:
            blobs["sha256:" + sha(data)] = data
            entries.append({"mediaType": media_type, "digest": "sha256:" + sha(data), "size": len(data)})
        blobs["sha256:" + sha(CONFIG)] = CONFIG
        manifest = {"schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE, "layers": entries,
                    "config": {"mediaType": oci.CONFIG_TYPE, "digest": "sha256:" + sha(CONFIG), "size": len(CONFIG)}}
        self.manifests[(repository, tag)] = json.dumps(manifest).encode()
        return f"{self.host}/{repository}:{tag}"

    def incomplete_manifests(self) -> list[str]:
        """Manifests that name a blob this repository does not hold."""
        out = []
        for (repository, tag), raw in self.manifests.items():
            manifest = json.loads(raw)
            for entry in [manifest["config"], *manifest["layers"]]:
                if entry["digest"] not in self.blobs.get(repository, {}):
                    out.append(f"{repository}:{tag} names {entry['mediaType']} {entry['digest']}")
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(registry: Standin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict | None = None, send: bool = True) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send:
                self.wfile.write(body)

        def do_GET(self, head: bool = False):
            path = self.path.split("?", 1)[0]
            if path == "/v2/":
                return self.reply(200, b"{}")
            found = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
            data = None
            if found and found[2] == "manifests":
                data = registry.manifests.get((found[1], found[3]))
            elif found:
                data = registry.blobs.get(found[1], {}).get(found[3])
            if data is None:
                return self.reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
            headers = {"Docker-Content-Digest": "sha256:" + sha(data),
                       "Content-Type": oci.MANIFEST_TYPE if found[2] == "manifests" else "application/octet-stream"}
            stall = None if head else registry.take_stall("GET", self.path)
            if stall is None:
                return self.reply(200, data, headers, send=not head)
            self.reply(200, data, headers, send=False)
            self.wfile.write(data[:stall.at])
            self.wfile.flush()
            stall.hold()
            self.close_connection = True  # the rest is never sent: the server is gone

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_POST(self):
            path = self.path.split("?", 1)[0]
            found = re.fullmatch(r"/v2/(.+)/blobs/uploads/", path)
            if not found:
                return self.reply(404)
            if stall := registry.take_stall("POST", self.path):
                stall.hold()
                self.close_connection = True
                return
            self.reply(202, headers={"Location": f"/v2/{found[1]}/blobs/uploads/{uuid.uuid4()}"})

        def do_PUT(self):
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            stall = registry.take_stall("PUT", self.path)
            body = self.rfile.read(min(length, stall.at)) if stall else b""
            if stall:
                stall.hold()
                self.close_connection = True  # what came after the kill is not a whole body
                return
            body += self.rfile.read(length - len(body))
            if upload := re.fullmatch(r"/v2/(.+)/blobs/uploads/[^/]+", path):
                digest = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("digest", "")
                if len(body) != length or digest.replace("%3A", ":") != "sha256:" + sha(body):
                    return self.reply(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                registry.blobs.setdefault(upload[1], {})["sha256:" + sha(body)] = body
                return self.reply(201)
            if manifest := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path):
                registry.manifests[(manifest[1], manifest[2])] = body  # checked by no one here
                return self.reply(201)
            self.reply(404)

    return Handler


# ---- the server, killed and restarted on one store --------------------------------------------


@dataclass
class Rig:
    server: Server
    registry: Standin
    files: dict[str, bytes]
    # what may be listed: ids ready with the sha256 of their model file; records the test
    # created itself (POST /store/v1/models) that may stay not ready
    ready: dict[str, str] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)
    kills: int = 0
    hashed: dict[tuple, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def in_background(self, call) -> threading.Thread:
        def run():
            try:
                call()
            except httpx.TransportError:
                pass  # the server was killed under it
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def kill_at(self, stall: Stall, start) -> None:
        """Start a transfer, SIGKILL the server where `stall` holds it, restart it."""
        thread = self.in_background(start)
        assert stall.reached.wait(WAIT), f"the transfer never reached {stall}:\n{self.server.log()[-3000:]}"
        self.server.kill()
        self.kills += 1
        stall.release.set()
        thread.join(WAIT)
        self.server.start()

    def file_sha(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        if key not in self.hashed:
            self.hashed[key] = sha(path.read_bytes())
        return self.hashed[key]

    def check(self) -> None:
        """Only complete models are listed, each file hashes to its record, no temp file stays."""
        store = self.server.store
        models = httpx.get(f"{self.url}/store/v1/models").json()["data"]
        ready = {m["id"]: m for m in models if m["readyToUse"]}
        assert {m["id"] for m in models} - set(ready) <= self.records, "a half-made model is listed"
        assert set(ready) == set(self.ready), "a complete model is missing, or a new one appeared"
        for model_id, view in ready.items():
            folder = store / "models" / model_id
            meta = json.loads((folder / "model.json").read_text())
            assert "pending" not in meta
            for role, record in meta["files"].items():
                assert self.file_sha(folder / record["name"]) == record["sha256"], (model_id, role)
            assert view["sha256"] == self.ready[model_id]
        tags = httpx.get(f"{self.url}/api/tags", headers=AUTH).json()["models"]
        assert {names.to_id(t["name"]): t["digest"] for t in tags} == \
            {i: v["sha256"] for i, v in ready.items()}
        loaded = httpx.get(f"{self.url}/v1/models", headers=AUTH).json()["data"]
        assert {m["id"] for m in loaded} <= set(ready)
        leftovers = [p.relative_to(store) for p in store.rglob("*")
                     if p.name.endswith((".partial", ".tmp")) or p.name.startswith(".upload-")]
        assert leftovers == []
        for blob in (store / "blobs").glob("sha256-*"):
            assert self.file_sha(blob) == blob.name.removeprefix("sha256-")
        assert self.registry.incomplete_manifests() == []


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    files = {name: make_gguf(root / f"{name}.gguf", SIZE, seed=i, arch="clip" if name == "mmproj" else "llama")
             .read_bytes() for i, name in enumerate(("a", "b", "mmproj"))}
    registry = Standin()
    server = Server(root / "store", api_key=KEY, log_path=root / "server.log").start()
    yield Rig(server, registry, files)
    server.stop()
    registry.close()


def test_kills_during_store_uploads(rig):
    """Multipart uploads to a new record, killed before the file's first byte, half-way and
    before the closing boundary; then an upload that replaces a ready model, killed half-way."""
    before = rig.kills
    a, b = rig.files["a"], rig.files["b"]

    def body(data: bytes) -> tuple[bytes, int, int]:
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.gguf\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        return head + data + tail, len(head), len(tail)

    def upload(model_id: str, data: bytes, stall: Stall | None = None) -> httpx.Response:
        whole, _, _ = body(data)
        return httpx.post(f"{rig.url}/store/v1/models/{model_id}/upload", timeout=WAIT,
                          content=stalled_body(whole, stall) if stall else whole,
                          headers={**AUTH, "Content-Length": str(len(whole)),
                                   "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})

    whole, head, tail = body(a)
    for n, at in enumerate((head, head + len(a) // 2, len(whole) - tail)):
        model_id = f"up-{n}"
        httpx.post(f"{rig.url}/store/v1/models", headers=AUTH,
                   json={"id": model_id, "version": "1", "kind": "llm"}).raise_for_status()
        rig.records.add(model_id)
        stall = Stall("", "", at)
        rig.kill_at(stall, lambda: upload(model_id, a, stall))
        rig.check()
        assert upload(model_id, a).json()["readyToUse"] is True
        rig.ready[model_id] = sha(a)
        rig.check()

    stall = Stall("", "", head + len(b) // 2)
    rig.kill_at(stall, lambda: upload("up-0", b, stall))
    rig.check()  # the old file, whole
    assert upload("up-0", b).json()["sha256"] == sha(b)
    rig.ready["up-0"] = sha(b)
    rig.check()
    assert rig.kills - before == 4


def test_kills_during_ollama_blob_uploads(rig):
    """/api/blobs with a Content-Length (killed at a third) and chunked, as `ollama create`
    streams one (killed at two thirds, and with every byte sent but the last chunk)."""
    before = rig.kills
    for n, (third, length) in enumerate(((1, True), (2, False), (3, False))):
        data = rig.files["a"] + bytes([n])  # a new blob each time
        url = f"{rig.url}/api/blobs/sha256:{sha(data)}"
        stall = Stall("", "", len(data) * third // 3)
        headers = {**AUTH, **({"Content-Length": str(len(data))} if length else {})}
        rig.kill_at(stall, lambda: httpx.post(url, headers=headers, content=stalled_body(data, stall), timeout=WAIT))
        assert httpx.head(url, headers=AUTH).status_code == 404
        rig.check()
        assert httpx.post(url, headers=AUTH, content=iter([data])).status_code == 201
        assert httpx.head(url, headers=AUTH).status_code == 200
        rig.check()
    assert rig.kills - before == 3


def pull(rig: Rig, name: str) -> httpx.Response:
    return httpx.post(f"{rig.url}/api/pull", headers=AUTH, timeout=WAIT,
                      json={"model": name, "insecure": True, "stream": False})


def test_kills_during_pulls(rig):
    """Killed while the manifest, the template layer, the model layer (at its first byte, half
    and all but the last byte) and a vlm's projector (the model layer done) come in, and while
    a new version of a pulled model comes in (the old one must stay)."""
    before = rig.kills
    a, b, mmproj = rig.files["a"], rig.files["b"], rig.files["mmproj"]
    cases = [  # (repository, layers, stalled request, bytes before the stall)
        ("kill/manifest", [(oci.MODEL, a)], "manifests/latest", 0),
        ("kill/template", [(oci.MODEL, a), (oci.TEMPLATE, TEMPLATE)], "blobs/sha256:" + sha(TEMPLATE), 0),
        ("kill/first-byte", [(oci.MODEL, a)], "blobs/sha256:" + sha(a), 0),
        ("kill/half", [(oci.MODEL, a)], "blobs/sha256:" + sha(a), SIZE // 2),
        ("kill/last-byte", [(oci.MODEL, a)], "blobs/sha256:" + sha(a), len(a) - 1),
        ("kill/vlm", [(oci.MODEL, a), (oci.PROJECTOR, mmproj)], "blobs/sha256:" + sha(mmproj), len(mmproj) // 2),
    ]
    for repository, layers, request, at in cases:
        name = rig.registry.add_model(repository, layers)
        rig.registry.stall = stall = Stall("GET", f"/v2/{repository}/{request}", at)
        rig.kill_at(stall, lambda: pull(rig, name))
        rig.check()
        r = pull(rig, name)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        rig.ready[names.to_id(name)] = sha(a)
        rig.check()

    # The tag moves to a new file; the pull of it is killed half-way: the old model stays.
    name = rig.registry.add_model("kill/half", [(oci.MODEL, b)])
    rig.registry.stall = stall = Stall("GET", f"/v2/kill/half/blobs/sha256:{sha(b)}", len(b) // 2)
    rig.kill_at(stall, lambda: pull(rig, name))
    rig.check()
    assert pull(rig, name).json()["status"] == "success"
    rig.ready[names.to_id(name)] = sha(b)
    rig.check()
    assert rig.kills - before == 7


def test_kills_during_pushes(rig):
    """Killed as the upload of the first blob starts, in the model blob (a third, all but its
    last byte), as the template and the config blobs go, and as the manifest goes: the
    registry never holds a manifest without its blobs, and the push then succeeds."""
    before = rig.kills
    a = rig.files["a"]
    source = rig.registry.add_model("kill/source", [(oci.MODEL, a), (oci.TEMPLATE, TEMPLATE)])
    assert pull(rig, source).json()["status"] == "success"
    rig.ready[names.to_id(source)] = sha(a)
    config_digest = None
    cases = [("POST", "blobs/uploads/", 0), ("PUT", "model", len(a) // 3), ("PUT", "model", len(a) - 1),
             ("PUT", "template", 0), ("PUT", "config", 0), ("PUT", "manifests/latest", 0)]
    for n, (method, what, at) in enumerate(cases):
        repository = f"kill/push-{n}"
        name = f"{rig.registry.host}/{repository}:latest"
        r = httpx.post(f"{rig.url}/api/copy", headers=AUTH, json={"source": source, "destination": name})
        assert r.status_code == 200, r.text
        rig.ready[names.to_id(name)] = sha(a)
        digest = {"model": "sha256:" + sha(a), "template": "sha256:" + sha(TEMPLATE), "config": config_digest}
        if what in digest:
            stall = Stall("PUT", f"/v2/{repository}/blobs/uploads/", at, digest=digest[what])
        else:
            stall = Stall(method, f"/v2/{repository}/{what}", at)
        rig.registry.stall = stall
        rig.kill_at(stall, lambda: httpx.post(f"{rig.url}/api/push", headers=AUTH, timeout=WAIT,
                                              json={"model": name, "insecure": True, "stream": False}))
        rig.check()
        assert (repository, "latest") not in rig.registry.manifests
        r = httpx.post(f"{rig.url}/api/push", headers=AUTH, timeout=WAIT,
                       json={"model": name, "insecure": True, "stream": False})
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        manifest = json.loads(rig.registry.manifests[(repository, "latest")])
        config_digest = manifest["config"]["digest"]  # the same for every copy: the next case's stall
        assert [layer["digest"] for layer in manifest["layers"]] == ["sha256:" + sha(a), "sha256:" + sha(TEMPLATE)]
        rig.check()
    assert rig.kills - before == 6

