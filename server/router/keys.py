"""The router's own key, on the routes it answers itself: the cluster-wide lists and /metrics,
which name every Model and pod it watches. Asked for as each API asks (`Authorization: Bearer`
or `x-api-key`) and refused in each API's error shape, as a pod refuses. Proxied requests are
not checked here: they carry the Model's own key to its pods, which check it."""
from __future__ import annotations

import falcon
import falcon.asgi

from modelyard.server.http.auth import INVALID_KEY, MISSING_KEY, given_key, key_matches
from modelyard.server.http.errors import BAD_KEY
from modelyard.server.http.jsonio import dumps
from modelyard.server.router.families import Voices


class RouterKey:
    """Falcon ASGI middleware. A resource opts in with `keyed`: the methods that need the key
    (a list's GET; its POST, which pre-loads a Model, goes to that Model's pods)."""

    def __init__(self, key: str, voices: Voices) -> None:
        self.key = key
        self.voices = voices

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource,
                               params) -> None:
        if not self.key or req.method not in getattr(resource, "keyed", ()):
            return
        token = given_key(req.get_header("Authorization"), req.get_header("x-api-key"))
        rule = self.voices.rules.for_request(req)
        if token is None:
            code, message, kind = 401, MISSING_KEY, None
            resp.set_header("WWW-Authenticate", "Bearer")
        elif not key_matches(token, self.key):
            code, message, kind = rule.bad_key_status, INVALID_KEY, BAD_KEY
        else:
            return
        resp.status = falcon.code_to_http_status(code)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = dumps(rule.error_body(code, message, kind))
        resp.complete = True
