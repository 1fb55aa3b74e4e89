"""Ollama's models in an OCI distribution registry: the manifest format of `ollama pull`
and `ollama push`, and the registry HTTP calls (distribution spec v2) that move them.

A model is a Docker image manifest (schema 2) whose layers carry Ollama's media types:
the GGUF file, a vision model's projector, and small text layers (template, system
prompt, parameters as JSON, license). The config blob names the format and family.

Registries are reached over https, or plain http when the caller says `insecure` (as
`ollama pull --insecure` does; the tests' registry listens on loopback). Anonymous
bearer tokens (the `WWW-Authenticate: Bearer realm=...` dance that registry.ollama.ai
and Docker Hub use) are fetched as a Docker client does.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx

from modelyard.server.registry.errors import Cancelled, FetchError

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
TEMPLATE = "application/vnd.ollama.image.template"
SYSTEM = "application/vnd.ollama.image.system"
PARAMS = "application/vnd.ollama.image.params"
LICENSE = "application/vnd.ollama.image.license"
# The small layers, read into the model's record rather than stored as files.
TEXT_LAYERS = {TEMPLATE: "template", SYSTEM: "system", PARAMS: "parameters", LICENSE: "license"}
TIMEOUT = httpx.Timeout(15.0, read=60.0)
CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str
    insecure: bool = False

    @property
    def base(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.host}/v2/{self.repository}"

    def blob_url(self, digest: str) -> str:
        return f"{self.base}/blobs/{digest}"


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class Manifest:
    layers: list[Layer]
    config: Layer | None = None
    raw: dict = field(default_factory=dict)

    def layer(self, media_type: str) -> Layer | None:
        return next((l for l in self.layers if l.media_type == media_type), None)


def parse_manifest(data: bytes) -> Manifest:
    """A manifest's layers, checked enough that a hostile one cannot point us elsewhere."""
    try:
        raw = json.loads(data)
        layers = [Layer(l["mediaType"], l["digest"], int(l["size"])) for l in raw.get("layers", [])]
        config = raw.get("config")
        config = Layer(config["mediaType"], config["digest"], int(config["size"])) if config else None
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"The registry sent a manifest that does not parse: {exc}") from None
    for layer in layers + ([config] if config else []):
        if not _DIGEST.match(layer.digest) or layer.size < 0:
            raise FetchError(f"The manifest has a bad layer: {layer.digest!r}")
    if not any(l.media_type == MODEL for l in layers):
        raise FetchError("The manifest has no model layer: it is not an Ollama model", code=400)
    return Manifest(layers, config, raw)


def build_manifest(layers: list[Layer], config: Layer) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config.as_json(),
                       "layers": [l.as_json() for l in layers]}).encode()


def config_blob(family: str, file_type: str, layers: list[Layer]) -> bytes:
    return json.dumps({"model_format": "gguf", "model_family": family, "model_families": [family],
                       "file_type": file_type, "architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": [l.digest for l in layers]}}).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client:
    """The registry calls of one pull or push, with the bearer token they earn."""

    def __init__(self, ref: Reference, scope: str):
        self.ref = ref
        self.scope = scope
        self.http = httpx.Client(follow_redirects=True, timeout=TIMEOUT)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        for _ in range(2):
            headers = dict(kwargs.pop("headers", None) or {})
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                resp = self.http.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise FetchError(f"The registry {self.ref.host} cannot be reached: {exc}. "
                                 f"A registry without TLS needs 'insecure': true.") from None
            if resp.status_code == 401 and self.token is None and self._authenticate(resp):
                kwargs["headers"] = headers
                continue
            return resp
        return resp

    def _authenticate(self, resp: httpx.Response) -> bool:
        """Fetch an anonymous token for the challenge's realm (Docker's token protocol)."""
        challenge = resp.headers.get("www-authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            return False
        query = {"service": params.get("service", ""), "scope": params.get("scope", self.scope)}
        try:
            got = self.http.get(params["realm"], params=query)
            self.token = got.json().get("token") or got.json().get("access_token")
        except (httpx.HTTPError, ValueError):
            return False
        return bool(self.token)

    def manifest(self) -> tuple[Manifest, int]:
        resp = self.request("GET", f"{self.ref.base}/manifests/{self.ref.tag}",
                            headers={"Accept": MANIFEST_TYPE})
        if resp.status_code == 404:
            raise FetchError(f"model '{self.ref.repository}:{self.ref.tag}' not found in the registry "
                             f"{self.ref.host}", code=404)
        _check(resp, "fetching the manifest")
        return parse_manifest(resp.content), len(resp.content)

    def small_blob(self, layer: Layer, limit: int = 1 << 20) -> bytes:
        """A text layer, verified against its digest."""
        if layer.size > limit:
            raise FetchError(f"The layer {layer.digest} is {layer.size} bytes; at most {limit} expected")
        resp = self.request("GET", self.ref.blob_url(layer.digest))
        _check(resp, f"fetching {layer.digest}")
        if digest_of(resp.content) != layer.digest:
            raise FetchError(f"The layer {layer.digest} does not match its digest")
        return resp.content

    # ---- push ------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", self.ref.blob_url(digest)).status_code == 200

    def upload(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        """One monolithic upload: POST for a session, PUT the bytes with the digest."""
        resp = self.request("POST", f"{self.ref.base}/blobs/uploads/")
        _check(resp, "starting an upload", ok=(202,))
        location = resp.headers.get("location", "")
        url = httpx.URL(self.ref.base).join(location)
        url = url.copy_merge_params({"digest": digest})
        resp = self.request("PUT", str(url), content=chunks,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        _check(resp, f"uploading {digest}", ok=(201,))

    def put_manifest(self, manifest: bytes) -> None:
        resp = self.request("PUT", f"{self.ref.base}/manifests/{self.ref.tag}", content=manifest,
                            headers={"Content-Type": MANIFEST_TYPE})
        _check(resp, "writing the manifest", ok=(200, 201))


def _check(resp: httpx.Response, doing: str, ok: tuple[int, ...] = (200,)) -> None:
    if resp.status_code in ok:
        return
    detail = resp.text[:300].strip()
    code = 502
    if resp.status_code in (401, 403):
        code = 403
        detail = (detail + " (this registry needs credentials, which Modelyard does not send yet)").strip()
    raise FetchError(f"The registry answered {resp.status_code} {doing}: {detail}", code=code)


def file_chunks(path: Path, progress: Callable[[int], None], cancel: threading.Event) -> Iterator[bytes]:
    """A file's bytes for an upload, reporting the count sent and stopping on cancel."""
    sent = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if cancel.is_set():
                raise Cancelled("The push was cancelled")
            sent += len(chunk)
            yield chunk
            progress(sent)
