"""The Falcon app: `create_app(settings)` wires the store, the engines and every API family
(api/families.py). Nothing here names a family: each declares its routes, guards and error
shape, and this loops over the declarations."""
from __future__ import annotations

from importlib.metadata import version

import falcon

from modelyard.server.api import errors as api_errors
from modelyard.server.api import metrics
from modelyard.server.api.family import Context
from modelyard.server.api.families import FAMILIES
from modelyard.server.http import jsonio
from modelyard.server.http.auth import AuthMiddleware
from modelyard.server.http.cors import CorsMiddleware
from modelyard.server.http.errors import ErrorSerializer, default_error_body
from modelyard.server.http.hosts import HostMiddleware
from modelyard.server.http.routes import Guard, RouteRule, RouteRules
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.manager import ModelManager
from modelyard.server.registry import egress
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings


def route_rules(families=FAMILIES) -> RouteRules:
    """Each route's guard and error shape, by URI template, for the auth and error layers."""
    rules = RouteRules(RouteRule(Guard.KEY, default_error_body))
    for family in families:
        for template, route in family.templates():
            rules.add(template, RouteRule(route.guard, family.error_body, family.bad_key_status))
        for prefix in family.error_prefixes:
            rules.add_prefix(prefix, RouteRule(Guard.KEY, family.error_body, family.bad_key_status))
    return rules


def create_app(settings: Settings, store: Store | None = None) -> falcon.App:
    store = store or Store(settings.store)
    egress.configure(settings.allow_fetch)  # where this worker's fetches may go
    collectors = metrics.Metrics()
    rules = route_rules()
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
    manager = ModelManager(store, settings, collectors)
    dispatcher = Dispatcher(manager, settings, collectors)
    ctx = Context(store=store, dispatcher=dispatcher, manager=manager, settings=settings, metrics=collectors,
                  version=version("modelyard"))
    for family in FAMILIES:
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
