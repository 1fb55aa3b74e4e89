"""How the failures of the layers below read over HTTP.

The registry's and the engines' errors each carry their status (`code`); this turns them
into ApiError, which the error serializer puts into each API family's shape.
"""
from __future__ import annotations

import falcon

from modelyard.server.http.errors import ApiError
from modelyard.server.inference.errors import InferenceError
from modelyard.server.registry.errors import StoreError


def _as_api_error(req, resp, exc, params):
    # An engine's own failure (a load, a runner that died) is a model error where a family
    # tells it apart from the server's (Mullama's model_error).
    kind = "model_error" if isinstance(exc, InferenceError) and exc.code >= 500 else None
    raise ApiError(exc.code, str(exc), kind=kind)


def add_handlers(app: falcon.App) -> None:
    for base in (StoreError, InferenceError):
        app.add_error_handler(base, _as_api_error)
