"""Forwarding one request to a pod of its Model: find the Model, wait for a ready pod (waking a
Model at zero replicas), pick the pod, retry another when the connection is refused, and
relay the answer unbuffered."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi

from modelyard.server.router import families
from modelyard.server.router.cluster import Cluster, Entry, wants_scale_from_zero
from modelyard.server.router.locate import Located, Locator, balance_key, model_of
from modelyard.server.router.metrics import RouterMetrics
from modelyard.server.router.pods import BrokeOff, ConnectFailed, Pods, Upstream
from modelyard.server.router.settings import RouterSettings

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the client library or server sets itself.
_DROP_REQUEST = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
                 "content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "date", "server"}

_PATIENCE_STEP = 0.25  # seconds between two rounds of tries at a Model's newly ready pods

Scaler = Callable[[str, str], Awaitable[None]]  # (namespace, name) -> replicas set to 1


# RFC 9110 9.2.2: a request of these methods may be sent again.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class _Outgoing:
    """One request as it goes to a Model's pods."""

    method: str
    target: str  # path and query
    headers: list[tuple[str, str]]
    body: bytes
    key: str | None  # what CHWBL hashes; None: the least-loaded pod
    # Whether another pod may be tried after one broke off before answering: a generation
    # (the conversation routes: nothing on a pod changes by it) or an idempotent method.
    replayable: bool


class Refusal(Exception):
    """A request the router answers itself, in the API's own error shape."""

    def __init__(self, code: int, message: str, template: str | None = None, final: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.template = template
        self.final = final  # the request went out: it is not sent again, even to a waking Model


class Proxy:
    def __init__(self, settings: RouterSettings, cluster: Cluster, metrics: RouterMetrics,
                 pods: Pods, scale: Scaler) -> None:
        self.settings = settings
        self.cluster = cluster
        self.metrics = metrics
        self.pods = pods
        self.scale = scale
        self.locator = Locator()
        self.voices = families.Voices()

    async def __call__(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **_: Any) -> None:
        """The sink of every route the router does not answer itself."""
        path = req.path
        try:
            await self._route(req, resp)
        except Refusal as exc:
            resp.status = falcon.code_to_http_status(exc.code)
            resp.content_type = falcon.MEDIA_JSON
            resp.data = self.voices.error(path, exc.template, exc.code, exc.message)

    async def _route(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        path = req.path
        located = self.locator.find(path)
        if located is None:
            raise Refusal(404, f"No route for {req.method} {path}")
        try:
            await self._forward(req, resp, located)
        except Refusal as exc:
            raise Refusal(exc.code, exc.message, located.template) from None

    async def _forward(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, located: Located) -> None:
        raw = await self._body(req)
        body = _json(raw) if located.where.body or located.conversation else None
        requested = model_of(located, body, dict(req.params))
        if not requested:
            field = located.where.body[0] if located.where.body else "model"
            self._count(None, 400)
            raise Refusal(400, f"'{field}' is required: the router picks the Model's pods by it")
        entry = self.cluster.find(requested)
        if entry is None:
            self._count(None, 404)
            raise Refusal(404, f"Model '{requested}' not found")
        try:
            await self._to_pods(req, resp, located, entry, requested, body, raw)
        except Refusal as exc:
            self._count(entry, exc.code)
            raise

    def _count(self, entry: Entry | None, code: int) -> None:
        """A request answered: by its Model ("" when it named none the router knows) and status."""
        self.metrics.requests.labels(entry.name if entry else "", str(code)).inc()

    async def _to_pods(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, located: Located, entry: Entry,
                       requested: str, body: Any, raw: bytes) -> None:
        event = _Events(self.voices, located, req.path)
        out = _Outgoing(
            req.method, req.relative_uri,
            # Falcon's copy of the headers: the ASGI scope's may be a one-pass iterable, which Falcon read.
            [(k, v) for k, v in req.headers.items() if k not in _DROP_REQUEST], raw,
            balance_key(requested, body, self.settings.prefix_chars) if located.conversation else None,
            located.conversation or req.method in _IDEMPOTENT)
        held = families.held_stream(located.family, located.declared, body)
        if not entry.balancer.loads and held is not None:
            # Answer the stream now and keep it alive while the Model wakes up.
            content_type, ping = held
            resp.status = falcon.HTTP_200
            resp.content_type = content_type
            resp.set_header("Cache-Control", "no-cache")
            resp.stream = self._held(entry, out, event, content_type, ping)
            return
        patience = None
        if not entry.balancer.loads:
            patience = await self._await_pod(entry)
        upstream, endpoint = await self._send(entry, out, patience)
        resp.status = falcon.code_to_http_status(upstream.status)
        for name, value in upstream.headers:
            if name.lower() not in _DROP_RESPONSE:
                resp.append_header(name, value)
        resp.stream = self._relay(entry, endpoint, upstream, event)

    async def _body(self, req: falcon.asgi.Request) -> bytes:
        limit = self.settings.max_body_size
        if req.content_length is not None and req.content_length > limit:
            raise Refusal(413, f"Request body is larger than {limit} bytes")
        raw = await req.stream.read()
        if len(raw) > limit:
            raise Refusal(413, f"Request body is larger than {limit} bytes")
        return raw

    # ---- waiting for a pod ------------------------------------------------------------
    async def _await_pod(self, entry: Entry, deadline: float | None = None) -> float:
        """Until the Model has a ready pod: scale it from zero when it may sit there; bounded.
        The deadline it kept to, which also bounds the wait for the new pod to listen."""
        await self._wake(entry)
        deadline = deadline or time.monotonic() + self.settings.scale_wait
        held = self.metrics.held.labels(entry.name)
        held.inc()
        try:
            while not entry.balancer.loads:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Refusal(503, f"Model '{entry.name}' has no ready pod after "
                                       f"{self.settings.scale_wait:g} s")
                try:
                    await asyncio.wait_for(self.cluster.changed(), left)
                except TimeoutError:
                    pass
        finally:
            held.dec()
        return deadline

    async def _wake(self, entry: Entry) -> None:
        status = entry.model.get("status") or {}
        if status.get("phase") == "Failed":
            reason = next((c.get("message") for c in status.get("conditions") or [] if c.get("status") == "False"
                           and c.get("message")), "") or "see kubectl describe model"
            raise Refusal(503, f"Model '{entry.name}' failed: {reason}")
        if wants_scale_from_zero(entry.model) and entry.claim_wake():
            try:
                await self.scale(entry.namespace, entry.name)
            except Exception as exc:
                raise Refusal(503, f"Model '{entry.name}' has no pod and could not be scaled to one: {exc}") from None
            self.metrics.scale_ups.labels(entry.name).inc()
            log.info("Model %s/%s scaled from zero to one for a request", entry.namespace, entry.name)

    async def _held(self, entry: Entry, out: "_Outgoing", event: "_Events", content_type: str,
                    ping: bytes) -> AsyncIterator[bytes]:
        """A stream answered before its Model had a pod: keep-alives, then the pod's events."""
        yield ping
        deadline = time.monotonic() + self.settings.scale_wait
        waiting = asyncio.ensure_future(self._await_pod(entry, deadline))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=self.settings.ping_seconds)
                if done:
                    break
                yield ping
            upstream, endpoint = await self._send(entry, out, waiting.result())
        except Refusal as exc:
            self._count(entry, exc.code)
            yield event.error(content_type, exc.code, exc.message)
            return
        finally:
            waiting.cancel()
        if upstream.status >= 400:
            try:
                data = await upstream.read()
            except BrokeOff:
                data = b""
            finally:
                self._done(entry, endpoint, upstream)
            message = _message(data) or f"HTTP {upstream.status}"
            yield event.error(content_type, upstream.status, message)
            return
        async for chunk in self._relay(entry, endpoint, upstream, event):
            yield chunk

    # ---- sending and relaying -----------------------------------------------------------
    async def _send(self, entry: Entry, out: "_Outgoing", patience: float | None = None) -> tuple[Upstream, str]:
        """The pod's response (headers read, body not yet). A pod that refuses the connection
        (nothing was sent) is left out and another is tried. A request that waited for the
        Model's first pod keeps trying until `patience` (a monotonic deadline): a pod that has
        just become ready may not listen yet."""
        while True:
            try:
                return await self._try_pods(entry, out)
            except Refusal as exc:
                if exc.final or patience is None or time.monotonic() >= patience:
                    raise
            await asyncio.sleep(_PATIENCE_STEP)

    async def _try_pods(self, entry: Entry, out: "_Outgoing") -> tuple[Upstream, str]:
        tried: list[str] = []
        errors: list[str] = []
        for attempt in range(1 + self.settings.connect_retries):
            endpoint = entry.balancer.pick(out.key, exclude=tried)
            if endpoint is None:
                break
            if attempt:
                self.metrics.retries.labels(entry.name).inc()
            entry.balancer.acquire(endpoint)
            self.metrics.in_flight.labels(entry.name, endpoint).inc()
            self.metrics.chosen.labels(entry.name, endpoint).inc()
            try:
                response = await self.pods.send(out.method, f"http://{endpoint}{out.target}", out.headers, out.body)
                self._count(entry, response.status)
                return response, endpoint
            except ConnectFailed as exc:
                self._release(entry, endpoint)
                tried.append(endpoint)
                errors.append(f"{endpoint}: {exc}")
            except BrokeOff as exc:
                # The request went out and no answer came back (a pod that died with it, or the
                # dying process of one that still took connections). A proxy retries only what
                # may be replayed (RFC 9112 9.3.1): generations and idempotent methods.
                self._release(entry, endpoint)
                message = f"{endpoint}: broke off before answering ({exc})"
                if not out.replayable:
                    raise Refusal(502, f"Model '{entry.name}': its pod {message}", final=True) from None
                tried.append(endpoint)
                errors.append(message)
            except BaseException:
                self._release(entry, endpoint)
                raise
        detail = "; ".join(errors) or "no ready pod"
        raise Refusal(502, f"Model '{entry.name}' is unreachable: {detail}")

    async def _relay(self, entry: Entry, endpoint: str, upstream: Upstream,
                     event: "_Events") -> AsyncIterator[bytes]:
        """The pod's body as it comes. A hang-up of our client cancels this (app.py), which
        closes the pod's connection, and the pod cancels the generation."""
        try:
            async for chunk in upstream.chunks():
                yield chunk
        except BrokeOff as exc:
            log.warning("Model %s: pod %s broke off a response: %s", entry.name, endpoint, exc)
            yield event.error(upstream.header("content-type"), 502,
                              f"Model '{entry.name}': its pod {endpoint} broke off the response")
        finally:
            self._done(entry, endpoint, upstream)

    def _done(self, entry: Entry, endpoint: str, upstream: Upstream) -> None:
        self._release(entry, endpoint)
        upstream.close()

    def _release(self, entry: Entry, endpoint: str) -> None:
        entry.balancer.release(endpoint)
        self.metrics.in_flight.labels(entry.name, endpoint).dec()


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise Refusal(400, "Request body is not valid JSON") from None


def _message(data: bytes) -> str:
    """The message of a pod's error body, whatever its family's shape."""
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or (body.get("detail") if isinstance(body, dict) else "") or "")



class _Events:
    """The in-stream error event of one request's API."""

    def __init__(self, voices: families.Voices, located: Located, path: str) -> None:
        self.voices = voices
        self.located = located
        self.path = path

    def error(self, content_type: str, code: int, message: str) -> bytes:
        body = self.voices.error_dict(self.path, self.located.template, code, message)
        return families.stream_error(self.located.family, body, content_type, code, message) or b""
