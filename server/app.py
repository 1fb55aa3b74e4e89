"""The Falcon app: `create_app(settings)` wires the store, the engines and every API family."""
from __future__ import annotations

from importlib.metadata import version

import falcon

from modelyard.server.api import errors as api_errors
from modelyard.server.api import health, metrics, openapi
from modelyard.server.api.anthropic import routes as anthropic
from modelyard.server.api.kserve import routes as kserve
from modelyard.server.api.mullama import routes as mullama
from modelyard.server.api.ollama import routes as ollama
from modelyard.server.api.ollama import transfers as ollama_transfers
from modelyard.server.api.openai import routes as openai
from modelyard.server.api.silicon import routes as silicon
from modelyard.server.api.store import download, models
from modelyard.server.http import jsonio
from modelyard.server.http.auth import AuthMiddleware
from modelyard.server.http.cors import CorsMiddleware
from modelyard.server.http.errors import handle_unexpected, serialize_error
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.manager import ModelManager
from modelyard.server.registry import egress
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings


def create_app(settings: Settings, store: Store | None = None) -> falcon.App:
    store = store or Store(settings.store)
    egress.configure(settings.allow_fetch)  # where this worker's fetches may go
    collectors = metrics.Metrics()
    app = falcon.App(middleware=[CorsMiddleware(settings.cors_origins), metrics.MetricsMiddleware(collectors),
                                 AuthMiddleware(settings.api_key)])
    app.req_options.strip_url_path_trailing_slash = True
    jsonio.use_for_responses(app)
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    api_errors.add_handlers(app)
    models.add_routes(app, store, settings)
    download.add_routes(app, store, settings)
    # Inference: one manager keeps each model in memory once for this worker process.
    # create_app runs in the gunicorn worker (after the fork), so engine threads live there.
    manager = ModelManager(store, settings, collectors)
    dispatcher = Dispatcher(manager, settings, collectors)
    openai.add_routes(app, dispatcher, settings)
    anthropic.add_routes(app, dispatcher, settings)
    kserve.add_routes(app, dispatcher, settings)
    ollama.add_routes(app, dispatcher)
    ollama_transfers.add_routes(app, store, settings)
    silicon.add_routes(app, store, dispatcher, settings)
    mullama.add_routes(app, dispatcher, settings, collectors)
    metrics.add_routes(app, collectors, manager)
    health.add_routes(app, manager)
    openapi.add_routes(app, version("modelyard"))
    manager.start_preload(list(settings.preload))
    return app
