"""DNS rebinding: a server without a key answers only requests addressed to the machine itself.

A page on another site can make a visitor's browser resolve its own host name to 127.0.0.1
and read a keyless local server's answers (the browser sees one origin, so CORS does not
stop it). The `Host` header still carries the attacker's name, so a keyless server refuses
any Host that is not a loopback name, as Ollama does since its DNS-rebinding fix. With a key,
a request without it is refused anyway, and any Host is served (ingresses, Services).
"""
from __future__ import annotations

import ipaddress

import falcon

from modelyard.server.http.errors import ApiError

LOOPBACK_NAMES = ("localhost",)


def host_name(header: str) -> str:
    """The host of a Host header, without its port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_local_host(name: str, allowed: tuple[str, ...] = ()) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or name in allowed:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostMiddleware:
    def __init__(self, api_key: str | None, allowed_hosts: list[str] | tuple[str, ...] = ()):
        self.enabled = not api_key
        self.allowed = tuple(h.strip().lower() for h in allowed_hosts if h.strip())

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header("Host")
        # HTTP/1.0 requests may carry no Host; no browser sends one without it.
        if not self.enabled or not header:
            return
        name = host_name(header)
        if not is_local_host(name, self.allowed):
            raise ApiError(403, f"Host '{name}' is not allowed: a server without an API key answers only "
                                "requests to localhost or a loopback address (a guard against DNS rebinding). "
                                "Add the name with --allowed-host (MODELYARD_ALLOWED_HOSTS) or set an API key.")
