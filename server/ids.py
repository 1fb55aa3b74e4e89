"""The model id rules of the registry (seed 000), shared by every route and the store."""
from __future__ import annotations

import re

_PATTERN = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_LENGTH = 255


def id_problem(model_id: object) -> str | None:
    """Why `model_id` is not a valid id, or None when it is."""
    if not isinstance(model_id, str) or not model_id:
        return "must be a non-empty string"
    if len(model_id) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if not _PATTERN.match(model_id):
        return "may contain only letters, digits, '-', '_' and '.'"
    if model_id[0] in ".-":
        return "cannot start with '.' or '-'"
    if ".." in model_id:
        return "cannot contain '..'"
    return None


def is_valid_id(model_id: object) -> bool:
    return id_problem(model_id) is None
