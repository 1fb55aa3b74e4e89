"""The Falcon app: `create_app(settings)` for tests and the CLI, `get_app()` for gunicorn."""
from __future__ import annotations

import falcon

from .auth import AuthMiddleware
from .config import Settings
from .errors import handle_unexpected, serialize_error
from .routes import download, health, registry
from .store import Store


def create_app(settings: Settings, store: Store | None = None) -> falcon.App:
    store = store or Store(settings.store)
    app = falcon.App(middleware=[AuthMiddleware(settings.api_key)])
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    registry.add_routes(app, store, settings)
    download.add_routes(app, store, settings)
    health.add_routes(app, is_ready=lambda: True)
    return app


def get_app() -> falcon.App:
    """Entry point for `gunicorn 'modelyard.server.app:get_app()'`, configured from MODELYARD_*."""
    return create_app(Settings.from_env())
