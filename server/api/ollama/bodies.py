"""What every Ollama route does first with a request: its body validated (a 400 in Ollama's
shape otherwise), and the model it names, or the daemon's default where it names none.
"""
from __future__ import annotations

from modelyard.server.shared import names
from modelyard.server.api.ollama.schema import RequestError, validate
from modelyard.server.http.bodies import read_json_object
from modelyard.server.http.errors import bad_request
from modelyard.server.inference.dispatch import Dispatcher


def resolve(dispatcher: Dispatcher, name: str | None) -> str:
    """The model a request names, or the daemon default where it names none (Mullama's
    requests may omit `model`): the one set with set_default, else the first loaded."""
    if name:
        return name
    default = dispatcher.manager.default_model()
    if default is None:
        raise bad_request("'model' is required: no model is loaded to be the default "
                          "(name one, or load one with POST /api/models/load)")
    return names.short_name(default)


def parse(model, body):
    try:
        return validate(model, body)
    except RequestError as exc:
        raise bad_request(str(exc)) from None


def read(req, model, max_body_size: int):
    """The request's JSON object body as `model`: 400 for malformed JSON or a wrong field,
    413 beyond max_body_size."""
    return parse(model, read_json_object(req, max_body_size))
