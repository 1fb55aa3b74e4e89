"""The Falcon app: `create_app(settings)` for tests and the CLI, `get_app()` for gunicorn."""
from __future__ import annotations

import falcon

from . import jsonio
from .auth import AuthMiddleware
from .config import Settings
from .errors import handle_unexpected, serialize_error
from .engines.manager import ModelManager
from .inference import Inference
from .metrics import Metrics, MetricsMiddleware
from .metrics import add_routes as add_metrics_routes
from .routes import download, health, kserve, openai, registry
from .store import Store


def create_app(settings: Settings, store: Store | None = None) -> falcon.App:
    store = store or Store(settings.store)
    metrics = Metrics()
    app = falcon.App(middleware=[MetricsMiddleware(metrics), AuthMiddleware(settings.api_key)])
    app.req_options.strip_url_path_trailing_slash = True
    jsonio.use_for_responses(app)
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    registry.add_routes(app, store, settings)
    download.add_routes(app, store, settings)
    # Inference: one manager keeps each model in memory once for this worker process.
    # create_app runs in the gunicorn worker (after the fork), so engine threads live there.
    manager = ModelManager(store, settings, metrics)
    inference = Inference(manager, settings, metrics)
    openai.add_routes(app, inference, settings)
    kserve.add_routes(app, inference, settings, is_ready=manager.is_ready)
    add_metrics_routes(app, metrics)
    health.add_routes(app, is_ready=manager.is_ready)
    manager.start_preload(list(settings.preload))
    return app


def get_app() -> falcon.App:
    """Entry point for `gunicorn 'modelyard.server.app:get_app()'`, configured from MODELYARD_*."""
    return create_app(Settings.from_env())
