"""Ollama's API: which route each handler serves. The handlers are in models.py (the model
routes), generation.py (/api/generate, /api/chat), embeddings.py and transfers.py (pull,
push, create, blobs). Mullama's daemon shares them (api/mullama).
"""
from __future__ import annotations

import falcon

from modelyard.server.api.ollama.embeddings import Embed, Embeddings
from modelyard.server.api.ollama.generation import Chat, Generate
from modelyard.server.api.ollama.models import Copy, Delete, Ps, Root, Show, Tags, Version
from modelyard.server.inference.dispatch import Dispatcher


def add_routes(app: falcon.App, dispatcher: Dispatcher) -> None:
    app.add_route("/", Root())
    app.add_route("/api/version", Version())
    app.add_route("/api/tags", Tags(dispatcher))
    app.add_route("/api/show", Show(dispatcher))
    app.add_route("/api/ps", Ps(dispatcher))
    app.add_route("/api/copy", Copy(dispatcher))
    app.add_route("/api/delete", Delete(dispatcher))
    app.add_route("/api/generate", Generate(dispatcher))
    app.add_route("/api/chat", Chat(dispatcher))
    app.add_route("/api/embed", Embed(dispatcher))
    app.add_route("/api/embeddings", Embeddings(dispatcher))
