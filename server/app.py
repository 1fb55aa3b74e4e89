"""The Falcon app: `create_app(settings)` wires the store, the engines and every API family
(api/families.py). Nothing here names a family: each declares its routes, guards and error
shape, and this loops over the declarations."""
from __future__ import annotations

from importlib.metadata import version

import falcon

from modelyard.server.api import errors as api_errors
from modelyard.server.api import metrics
from modelyard.server.api.family import Context
from modelyard.server.api.families import FAMILIES, route_rules
from modelyard.server.http import jsonio
from modelyard.server.http.auth import AuthMiddleware
from modelyard.server.http.cors import CorsMiddleware
from modelyard.server.http.errors import ErrorSerializer
from modelyard.server.http.hosts import HostMiddleware
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.manager import ModelManager
from modelyard.server.registry import egress
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings


def create_app(settings: Settings, store: Store | None = None, families=FAMILIES) -> falcon.App:
    store = store or Store(settings.store)
    egress.configure(settings.allow_fetch)  # where this worker's fetches may go
    collectors = metrics.Metrics()
    rules = route_rules(families)
    app = falcon.App(middleware=[
        HostMiddleware(settings.api_key, settings.allowed_hosts),
        CorsMiddleware(settings.cors_origins),
        metrics.MetricsMiddleware(collectors),
        AuthMiddleware(settings.api_key, rules),
    ])
    app.req_options.strip_url_path_trailing_slash = True
    jsonio.use_for_responses(app)
    errors = ErrorSerializer(rules)
    app.set_error_serializer(errors.serialize)
    app.add_error_handler(Exception, errors.unexpected)
    api_errors.add_handlers(app)
    # Inference: one manager keeps each model in memory once for this worker process.
    # create_app runs in the gunicorn worker (after the fork), so engine threads live there.
    manager = ModelManager(store, settings, collectors.inference)
    dispatcher = Dispatcher(manager, settings)
    ctx = Context(store=store, dispatcher=dispatcher, manager=manager, settings=settings, metrics=collectors,
                  version=version("modelyard"), families=families)
    for family in families:
        resources = family.resources(ctx)
        declared = {route.path for route in family.routes}
        if set(resources) != declared:
            raise RuntimeError(f"{family.name}: resources for {sorted(set(resources) ^ declared)} "
                               "do not match its declared routes")
        for template, route in family.templates():
            app.add_route(template, resources[route.path])
        for exception, handler in family.error_handlers:
            app.add_error_handler(exception, handler)
        for prefix, sink in family.sinks:
            app.add_sink(sink(), prefix)
    manager.start_preload(list(settings.preload))
    return app
