"""Where the server's own fetches may go: registry pulls and pushes, URL downloads, the
Hugging Face hub (HF_ENDPOINT), a registry's token realm and every redirect of them.

By default a fetch may reach public addresses only: loopback, private, link-local,
unique-local, shared (CGNAT), multicast, reserved and unspecified addresses are refused,
so a name, a URL or a hostile registry's redirect cannot make the server reach a
service inside its network (a cloud metadata endpoint, a database, the server itself).
The operator allows more with `--allow-fetch` / MODELYARD_ALLOW_FETCH: host names
(`registry.internal`) or address ranges (`10.0.0.0/8`, `127.0.0.1`).

The check runs on the addresses the name resolves to, at connect time: `Transport`
resolves the host once, checks every address, and connects to the checked one (the
request keeps its Host header and TLS its server name). A name that resolves to a public
address for a check and to an inside one for the connection (DNS rebinding) cannot slip
between the two, because there is only one resolution. Odd spellings of an address
(2130706433, 0x7f.1, [::1], ::ffff:127.0.0.1) resolve to what they mean and are checked
as such. docs/security.md describes the policy.

`configure()` sets the process's policy once at start (the server, `modelyard fetch`);
every client made by `client()` and huggingface_hub's own client use it.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import threading
from dataclasses import dataclass, field

import httpx

from modelyard.server.registry.errors import FetchError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
# NAT64's well-known prefix (RFC 6052): its addresses reach the IPv4 address they embed.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
FLAG = "--allow-fetch"
VARIABLE = "MODELYARD_ALLOW_FETCH"


class EgressRefused(FetchError):
    """A fetch to an address the policy refuses: the server will not go there."""

    def __init__(self, message: str):
        super().__init__(message, code=403)


def inside_kind(ip: Address) -> str | None:
    """What kind of non-public address `ip` is ("loopback", "private", ...), None when public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _NAT64 or int(ip) >> 32 == 0) and not ip.is_unspecified \
                and not ip.is_loopback:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # NAT64, or IPv4-compatible ::a.b.c.d
        if embedded is not None:
            return inside_kind(embedded)
    for kind, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class Policy:
    """Public addresses, plus the hosts and ranges the operator allowed."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    entries: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, allow: list[str] | tuple[str, ...] | None) -> "Policy":
        """`allow`: host names and addresses or CIDR ranges. Raises ValueError naming a bad one."""
        hosts, networks = set(), []
        entries = [e for item in allow or () for e in re.split(r"[\s,]+", item) if e]
        for entry in entries:
            text = entry.lower()
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _HOST_NAME.match(text) or text.replace(".", "").isdigit():
                raise ValueError(f"'{entry}' is neither a host name nor an address or CIDR range")
            hosts.add(text.rstrip("."))
        return cls(frozenset(hosts), tuple(networks), tuple(entries))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def refusal(self, ip: Address) -> str | None:
        """Why `ip` is refused (its kind), or None when a fetch may connect to it."""
        kind = inside_kind(ip)
        if kind is None or any(ip.version == n.version and ip in n for n in self.networks):
            return None
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None and any(mapped in n for n in self.networks if n.version == 4):
            return None
        return kind

    def resolve(self, host: str, port: int) -> str | None:
        """The checked address to connect to for `host`, or None when the host is allowed by
        name (then the connection resolves it as usual). Raises EgressRefused, or OSError
        (socket.gaierror) when the name does not resolve."""
        if self.allows_host(host):
            return None
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        for ip in addresses:
            kind = self.refusal(ip)
            if kind is not None:
                shown = f"'{host}'" if host == str(ip) else f"'{host}' (it resolves to a {kind} address)"
                raise EgressRefused(
                    f"Fetching from {shown} is refused: the server does not fetch from {kind} "
                    f"addresses. An operator can allow it with {FLAG} ({VARIABLE}); see docs/security.md")
        return str(addresses[0])


def describe(resp: httpx.Response) -> str:
    """A response as an error may show it: its content type and declared size, no byte of it."""
    kind = resp.headers.get("content-type", "").split(";", 1)[0].strip()
    kind = kind if re.fullmatch(r"[\w.+-]+/[\w.+-]+", kind) else "no content type"
    length = resp.headers.get("content-length", "")
    return f"{kind}, {int(length)} bytes" if length.isdigit() else f"{kind}, no declared length"


def _transport_class(lib):
    """The policy's transport for httpx, or for httpx2 (huggingface_hub's fork of it, same API)."""

    class Transport(lib.BaseTransport):
        """lib's transport, connecting only to addresses the policy allows (see the module's
        notes): each request, redirects included, is sent to the address checked for its host.

        One connection pool per host name: pools are keyed by the address connected to, and
        two names on one address (a CDN's) must not share a connection made with the other's
        TLS server name."""

        def __init__(self, policy: Policy | None = None, **kwargs):
            self.policy = policy
            self.kwargs = kwargs
            self.pools: dict[str, lib.HTTPTransport] = {}
            self.lock = threading.Lock()

        def handle_request(self, request):
            policy = self.policy or current()
            url = request.url
            try:
                address = policy.resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
            except (OSError, UnicodeError) as exc:
                raise lib.ConnectError(f"cannot resolve '{url.host}': {exc}", request=request) from None
            if address is not None and address != url.host:
                extensions = dict(request.extensions)
                if url.scheme == "https":
                    extensions["sni_hostname"] = url.host  # the certificate is checked for the name
                # The Host header was set from the original URL when the request was built.
                request = lib.Request(request.method, url.copy_with(host=address), headers=request.headers,
                                      stream=request.stream, extensions=extensions)
            return self._pool(url.host).handle_request(request)

        def _pool(self, host: str):
            with self.lock:
                if host not in self.pools:
                    self.pools[host] = lib.HTTPTransport(**self.kwargs)
                return self.pools[host]

        def close(self) -> None:
            with self.lock:
                pools, self.pools = list(self.pools.values()), {}
            for pool in pools:
                pool.close()

    return Transport


Transport = _transport_class(httpx)


_lock = threading.Lock()
_policy = Policy()


def configure(allow: list[str] | tuple[str, ...] | None) -> Policy:
    """Set this process's policy (at start) and route huggingface_hub's client through it.
    Raises ValueError for a bad entry."""
    global _policy
    policy = Policy.parse(allow)
    with _lock:
        _policy = policy
    _use_for_huggingface_hub()
    return policy


def current() -> Policy:
    return _policy


def client(verify=True, **kwargs) -> httpx.Client:
    """An httpx client whose every connection, redirects included, obeys the policy.
    (`verify` goes to the transport: a client given a transport ignores its own.)"""
    return httpx.Client(transport=Transport(verify=verify), **kwargs)


def _use_for_huggingface_hub() -> None:
    """huggingface_hub makes its one shared client with a factory: ours is its default
    (follow redirects, no timeout, its request hook) with the policy's transport."""
    import httpx2
    import huggingface_hub
    from huggingface_hub.utils import _http

    transport = _transport_class(httpx2)
    hook = getattr(_http, "hf_request_event_hook", None)  # offline mode, request ids
    huggingface_hub.set_client_factory(lambda: httpx2.Client(
        transport=transport(), follow_redirects=True, timeout=None,
        event_hooks={"request": [hook]} if hook else {}))
