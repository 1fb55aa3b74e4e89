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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx

from modelyard.server.registry import egress
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
# What a registry may send that is read into memory. Manifests: the distribution spec's
# 4 MiB that registries should accept; Ollama's are about 1 KiB. Text layers and the
# config blob: Ollama's are a few KiB. A token answer is a small JSON object.
MANIFEST_LIMIT = 4 << 20
TEXT_LIMIT = 1 << 20
CONFIG_LIMIT = 1 << 20
TOKEN_LIMIT = 64 << 10
# The layers a model has at most one of: a manifest naming one twice is ambiguous.
SINGLE = (MODEL, PROJECTOR, TEMPLATE, SYSTEM, PARAMS, LICENSE)
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
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FetchError(f"The registry sent a manifest that does not parse ({type(exc).__name__})") from None
    for layer in layers + ([config] if config else []):
        if not _DIGEST.match(layer.digest) or layer.size < 0:
            raise FetchError("The manifest has a layer with a malformed digest or size")
    for media_type in SINGLE:
        if sum(l.media_type == media_type for l in layers) > 1:
            raise FetchError(f"The manifest names a {media_type.rsplit('.', 1)[-1]} layer twice")
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
    """The registry calls of one pull or push, with the bearer token they earn.

    Every connection goes through the egress policy (egress.Transport), redirects and the
    token realm included. Bodies are streamed and read only up to a limit, and an error
    never quotes what the registry sent (its status, content type and size only).
    """

    def __init__(self, ref: Reference, scope: str):
        self.ref = ref
        self.scope = scope
        self.http = egress.client(follow_redirects=True, timeout=TIMEOUT)
        self.token: str | None = None

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def open(self, method: str, url: str, **kwargs) -> Iterator[httpx.Response]:
        """A response whose body is not read yet: the caller reads it within a limit."""
        resp = self._send(method, url, **kwargs)
        try:
            yield resp
        finally:
            resp.close()

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """A response whose body is not wanted (HEAD, an upload's answers)."""
        with self.open(method, url, **kwargs) as resp:
            return resp

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        headers = {"Accept-Encoding": "identity", **(kwargs.pop("headers", None) or {})}
        for _ in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                resp = self.http.send(self.http.build_request(method, url, headers=headers, **kwargs),
                                      stream=True)
            except egress.EgressRefused:
                raise
            except httpx.HTTPError as exc:
                raise FetchError(f"The registry {self.ref.host} cannot be reached: {exc}. "
                                 f"A registry without TLS needs 'insecure': true.") from None
            if resp.status_code == 401 and self.token is None:
                resp.close()
                if self._authenticate(resp):
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
            with self.http.stream("GET", params["realm"], params=query,
                                  headers={"Accept-Encoding": "identity"}) as got:
                if got.status_code != 200:
                    return False
                answer = json.loads(read_limited(got, TOKEN_LIMIT, "the registry's token"))
            token = answer.get("token") or answer.get("access_token")
        except (httpx.HTTPError, ValueError, AttributeError, FetchError) as exc:
            if isinstance(exc, egress.EgressRefused):
                raise
            return False
        self.token = token if isinstance(token, str) and token else None
        return self.token is not None

    def manifest(self) -> tuple[Manifest, int]:
        with self.open("GET", f"{self.ref.base}/manifests/{self.ref.tag}",
                       headers={"Accept": MANIFEST_TYPE}) as resp:
            if resp.status_code == 404:
                raise FetchError(f"model '{self.ref.repository}:{self.ref.tag}' not found in the registry "
                                 f"{self.ref.host}", code=404)
            _check(resp, "fetching the manifest")
            data = read_limited(resp, MANIFEST_LIMIT, "The manifest")
        return parse_manifest(data), len(data)

    def small_blob(self, layer: Layer, limit: int = TEXT_LIMIT) -> bytes:
        """A text layer or the config blob, verified against its size and digest."""
        what = f"The layer {layer.digest}"
        if layer.size > limit:
            raise FetchError(f"{what} is {layer.size} bytes; at most {limit} are accepted")
        with self.open("GET", self.ref.blob_url(layer.digest)) as resp:
            _check(resp, f"fetching {layer.digest}")
            data = read_limited(resp, layer.size, what, declared=True)
        if len(data) != layer.size:
            raise FetchError(f"{what} is {len(data)} bytes, not the {layer.size} its manifest says")
        if digest_of(data) != layer.digest:
            raise FetchError(f"{what} does not match its digest")
        return data

    # ---- push ------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.request("HEAD", self.ref.blob_url(digest)).status_code == 200

    def upload(self, digest: str, size: int, chunks: Iterator[bytes]) -> None:
        """One monolithic upload: POST for a session, PUT the bytes with the digest."""
        resp = self.request("POST", f"{self.ref.base}/blobs/uploads/")
        _check(resp, "starting an upload", ok=(202,))
        url = self._upload_url(resp.headers.get("location", ""))
        url = url.copy_merge_params({"digest": digest})
        resp = self.request("PUT", str(url), content=chunks,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        _check(resp, f"uploading {digest}", ok=(201,))

    def _upload_url(self, location: str) -> httpx.URL:
        """The session's URL from the registry's `Location`, which must stay on the registry
        (scheme, host and port): a registry cannot send our bytes and token elsewhere."""
        base = httpx.URL(self.ref.base)
        try:
            url = base.join(location)
        except httpx.InvalidURL:
            raise FetchError("The registry answered an upload with a malformed Location") from None
        if _origin(url) != _origin(base):
            raise FetchError(f"The registry {self.ref.host} sent the upload to another host; "
                             f"an upload must stay on the registry")
        return url

    def put_manifest(self, manifest: bytes) -> None:
        resp = self.request("PUT", f"{self.ref.base}/manifests/{self.ref.tag}", content=manifest,
                            headers={"Content-Type": MANIFEST_TYPE})
        _check(resp, "writing the manifest", ok=(200, 201))


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _check(resp: httpx.Response, doing: str, ok: tuple[int, ...] = (200,)) -> None:
    """Refuse an unexpected status. The message names the status, content type and size,
    never the body: a registry (or what it redirects to) must not be echoed to the client."""
    if resp.status_code in ok:
        return
    code, detail = 502, ""
    if resp.status_code in (401, 403):
        code = 403
        detail = " (this registry needs credentials, which Modelyard does not send yet)"
    raise FetchError(f"The registry answered {resp.status_code} {doing} ({egress.describe(resp)}){detail}", code=code)


def read_limited(resp: httpx.Response, limit: int, what: str, declared: bool = False) -> bytes:
    """A streamed body, refused as soon as it passes `limit` bytes (never read whole first).
    `declared`: the limit is the size the manifest gave, so the message says so."""
    bound = "its declared size" if declared else "the limit"
    if resp.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        raise FetchError(f"{what} came with a content encoding; only plain bytes are accepted")
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise FetchError(f"{what} is {int(length)} bytes, more than {bound} ({limit} bytes)")
    data = bytearray()
    try:
        for chunk in resp.iter_raw():
            data += chunk
            if len(data) > limit:
                raise FetchError(f"{what} is longer than {bound} ({limit} bytes)")
    except httpx.HTTPError as exc:
        raise FetchError(f"{what} could not be read: {type(exc).__name__}") from None
    return bytes(data)


def file_chunks(path: Path, layer: Layer, progress: Callable[[int], None],
                cancel: threading.Event) -> Iterator[bytes]:
    """A file's bytes for an upload as `layer`, reporting the count sent and stopping on cancel.

    The bytes are hashed as they go, and the last chunk is held back until the whole file
    is known to match the layer's digest and size: a file changed since it was recorded (one
    registered by path, rewritten by its owner) is never completed under the old digest,
    whether or not the registry checks it."""
    sent, hasher = 0, hashlib.sha256()
    with open(path, "rb") as f:
        chunk = f.read(CHUNK)
        while chunk:
            if cancel.is_set():
                raise Cancelled("The push was cancelled")
            ahead = f.read(CHUNK)
            hasher.update(chunk)
            if not ahead and ("sha256:" + hasher.hexdigest() != layer.digest or sent + len(chunk) != layer.size):
                raise FetchError(f"The file of layer {layer.digest} changed since it was recorded; "
                                 "nothing was pushed under that digest", code=409)
            sent += len(chunk)
            yield chunk
            progress(sent)
            chunk = ahead
        if sent != layer.size:  # an empty file
            raise FetchError(f"The file of layer {layer.digest} changed since it was recorded", code=409)
