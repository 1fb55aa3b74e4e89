"""What the engines cannot do for a request; each message says what to change.

`code` is the HTTP status the API layer gives each one; the API layer alone decides the
body's shape (OpenAI's, Ollama's, Anthropic's, ...).
"""
from __future__ import annotations


class InferenceError(Exception):
    code = 500


class BadRequest(InferenceError):
    """The request cannot be served as sent: a prompt too long, an image to a text model."""

    code = 400


class ModelNotFound(InferenceError):
    code = 404

    def __init__(self, model_id: str, message: str | None = None):
        super().__init__(message or f"Model '{model_id}' not found")
        self.model_id = model_id


class ModelNotReady(BadRequest):
    """The model exists in the registry but has no complete file yet."""


class LoadFailed(InferenceError):
    code = 500


class EngineUnavailable(InferenceError):
    """The model's engine stopped or is stopping; a new request starts it again."""

    code = 503
