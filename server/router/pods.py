"""The router's HTTP client to the pods: aiohttp's, for its C HTTP parser (llhttp) and thin
connection pool. Measured against httpx's AsyncClient with the same pod (docs/benchmarks.md,
"Router"), it took half the time a request, and the router's per-request and per-chunk costs
are what `make bench-router` holds to 2 ms of added time to first token.

One session per router process, made on its event loop; the pool keeps idle connections to
the pods for less time than the pods' gunicorn keeps them (5 s), so it does not hand out one
that the pod is closing for idleness."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import aiohttp

CONNECT_TIMEOUT = 5.0  # seconds; a dead pod is tried again elsewhere
POOL_KEEPALIVE = 4.0  # seconds; below gunicorn's keep-alive of 5 (server/gunicorn_app.py)


class ConnectFailed(Exception):
    """Nothing was sent: the pod refused the connection or did not accept it in time."""


class BrokeOff(Exception):
    """The pod closed or broke the connection after the request went out."""


class Upstream:
    """A pod's response: status and headers read, the body streamed by `chunks`."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: list[tuple[str, str]] = list(response.headers.items())

    def header(self, name: str) -> str:
        return self._response.headers.get(name, "")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, undecoded (compressed bodies pass through as sent)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise BrokeOff(str(exc) or type(exc).__name__) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except aiohttp.ClientError as exc:
            raise BrokeOff(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        """Back to the pool when the body was read to its end; otherwise the connection is
        closed, which is how the pod learns that nobody waits for the rest (it then cancels the
        generation)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Pods:
    """`async with Pods() as pods`: the session lives as long as the router's app."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Pods:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_KEEPALIVE, use_dns_cache=False)
        # No read time-out (a generation takes as long as it takes; the pods send keep-alives);
        # nothing decoded or added that the client did not send.
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            trust_env=False)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> Upstream:
        """The pod's response with its headers read. ConnectFailed when nothing was sent."""
        assert self._session is not None, "use Pods as an async context manager"
        try:
            response = await self._session.request(method, url, headers=list(headers), data=body or None,
                                                   allow_redirects=False)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        except aiohttp.ClientError as exc:
            raise BrokeOff(str(exc) or type(exc).__name__) from exc
        return Upstream(response)
