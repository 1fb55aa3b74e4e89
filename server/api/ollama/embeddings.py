"""Ollama's /api/embed and its older /api/embeddings."""
from __future__ import annotations

import time

from modelyard.server.shared import names
from modelyard.server.api.ollama import bodies
from modelyard.server.api.ollama.schema import EmbedBody, EmbeddingsBody
from modelyard.server.http.errors import bad_request
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.requests import EmbeddingRequest


class Embed:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def on_post(self, req, resp):
        started = time.monotonic_ns()
        body = bodies.read(req, EmbedBody, self.dispatcher.settings.max_body_size)
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs or any(not x for x in inputs):
            raise bad_request("'input' must be a non-empty string or list of non-empty strings")
        model_id = names.to_id(body.model)
        t0 = time.monotonic_ns()
        self.dispatcher.model(model_id, ("embed",))
        load_ns = time.monotonic_ns() - t0
        if body.truncate:
            inputs = self._truncate(model_id, inputs)
        vectors, n_tokens = self.dispatcher.embed(EmbeddingRequest(model_id, inputs, dimensions=body.dimensions))
        resp.media = {"model": body.model, "embeddings": vectors, "total_duration": time.monotonic_ns() - started,
                      "load_duration": load_ns, "prompt_eval_count": n_tokens}

    def _truncate(self, model_id: str, inputs: list[str]) -> list:
        loaded = self.dispatcher.manager.get(model_id)
        engine = loaded.engine
        # A token stands for at most max_piece_bytes of text: a longer text's tail cannot be in
        # its first max_input tokens, so it is cut before tokenizing (a 30 MB input costs nothing).
        keep = (engine.max_input + 1) * loaded.model.max_piece_bytes
        out = []
        for x in inputs:
            tokens = engine.tokenize(x[:keep])
            out.append(tokens[:engine.max_input] if len(tokens) > engine.max_input else x)
        return out


class Embeddings:
    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher

    def on_post(self, req, resp):
        """Ollama's `prompt` gets `embedding`; Mullama's `input` gets `embeddings`, `dimensions`
        and `total_tokens` as well (both shapes are in every answer)."""
        body = bodies.read(req, EmbeddingsBody, self.dispatcher.settings.max_body_size)
        model = bodies.resolve(self.dispatcher, body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input if body.input is not None \
            else [body.prompt]
        if body.input is not None and not texts:
            raise bad_request("'input' must be a non-empty string or list of non-empty strings")
        if any(not t for t in texts):
            if body.input is not None:
                raise bad_request("'input' must be a non-empty string or list of non-empty strings")
            resp.media = {"embedding": []}  # Ollama answers an empty prompt so
            return
        vectors, n_tokens = self.dispatcher.embed(EmbeddingRequest(names.to_id(model), texts))
        resp.media = {"embedding": vectors[0], "model": model, "embeddings": vectors,
                      "dimensions": len(vectors[0]), "total_tokens": n_tokens}
