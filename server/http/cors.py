"""CORS for browser apps: preflight answers and the Access-Control-* headers.

Allowed origins are patterns: `scheme://host[:port]`, where the port may be `*` (any port)
and the host `*` (any host of that scheme, as `app://*` for desktop apps' webviews) or
`*.example.com` (its subdomains). `*` alone allows every origin, a deliberate setting.
Without settings only the machine's own origins are allowed (localhost, 127.0.0.1, [::1],
any port, http or https), as Ollama does; configured origins are added to those.

A request whose Origin is not allowed is refused with 403, preflight or not, as Ollama
refuses it: a page on another site must not use a local server through the visitor's
browser. Requests without an Origin (curl, SDKs, servers) are not affected.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import falcon

from modelyard.server.http.errors import ApiError

LOCAL_ORIGINS = tuple(f"{scheme}://{host}{port}" for scheme in ("http", "https")
                      for host in ("localhost", "127.0.0.1", "[::1]", "0.0.0.0") for port in ("", ":*"))
ALLOW_METHODS = "GET, POST, PUT, DELETE, HEAD, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, X-Api-Key, Anthropic-Version, Range, X-Requested-With"
MAX_AGE = "86400"


def _parts(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an origin or pattern, lower case; port '' when absent, '*' for
    any. None: not an origin."""
    try:
        u = urlsplit(origin)
    except ValueError:
        return None
    if not u.scheme or not u.netloc or u.path not in ("", "/") or u.query or u.fragment or "@" in u.netloc:
        return None
    netloc = u.netloc.lower()
    if netloc.endswith(":*"):
        host, port = netloc[:-2], "*"
    elif netloc.startswith("["):  # an IPv6 address
        host, _, rest = netloc.partition("]")
        host += "]"
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        port = rest[1:]
    else:
        host, _, port = netloc.partition(":")
        if port and not port.isdigit():
            return None
    return u.scheme.lower(), host, port


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    if "*" in patterns:
        return True
    got = _parts(origin)
    if got is None or "*" in got[1] or got[2] == "*":
        return False
    scheme, host, port = got
    for pattern in patterns:
        want = _parts(pattern)
        if want is None or want[0] != scheme:
            continue
        w_scheme, w_host, w_port = want
        host_ok = (w_host == "*" or w_host == host
                   or (w_host.startswith("*.") and host.endswith(w_host[1:])))
        port_ok = w_host == "*" or w_port == "*" or w_port == port
        if host_ok and port_ok:
            return True
    return False


class CorsMiddleware:
    """Put first: a preflight is answered before auth (browsers send it without the key)."""

    def __init__(self, origins: list[str] | tuple[str, ...]):
        self.patterns = tuple(LOCAL_ORIGINS) + tuple(o.strip().rstrip("/") for o in origins if o.strip())
        self.any = "*" in self.patterns

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        origin = req.get_header("Origin")
        if origin is None:
            return
        if not origin_allowed(origin, self.patterns):
            raise ApiError(403, f"Origin '{origin}' is not allowed: add it with --cors-origin "
                                "or MODELYARD_CORS_ORIGINS")
        if req.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
            resp.status = falcon.HTTP_204
            resp.set_header("Access-Control-Allow-Methods", ALLOW_METHODS)
            resp.set_header("Access-Control-Allow-Headers",
                            req.get_header("Access-Control-Request-Headers") or ALLOW_HEADERS)
            resp.set_header("Access-Control-Max-Age", MAX_AGE)
            resp.complete = True

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        origin = req.get_header("Origin")
        if origin is None or not origin_allowed(origin, self.patterns):
            return
        resp.set_header("Access-Control-Allow-Origin", "*" if self.any else origin)
        if not self.any:
            resp.append_header("Vary", "Origin")
