"""How a loaded model runs, as every API's model listing shows it.

One instance of a model serves every API, so a setting one API's load request changes
(Silicon Studio's KV cache type, Mullama's context and GPU layers) applies to the others
too; each listing of loaded models carries the same `serving` object (context size, GPU
layers, KV cache type, and the load request that chose them) so a client of any API can
see it. The facts come from inference/manager.py's `Serving`.
"""
from __future__ import annotations


def serving(manager, model_id: str) -> dict | None:
    """The `serving` object of a loaded model; None when it is not loaded."""
    facts = manager.serving(model_id)
    return facts.as_dict() if facts is not None else None


def with_serving(entry: dict, manager, model_id: str) -> dict:
    """`entry` with the model's `serving` object added when it is loaded."""
    facts = serving(manager, model_id)
    return {**entry, "serving": facts} if facts is not None else entry
