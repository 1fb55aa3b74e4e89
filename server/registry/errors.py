"""What can go wrong in the store; each has a message meant for the user.

`code` is the status each failure has wherever it is reported: the HTTP status of the
registry's routes, the `code` of a download's error event, the JSON lines of
`modelyard fetch`. This class table is the one mapping from store failures to statuses.
"""
from __future__ import annotations


class StoreError(Exception):
    """A store operation that cannot be done; the message says why."""

    code = 500


class ModelNotFound(StoreError, KeyError):
    code = 404

    def __init__(self, model_id: str):
        super().__init__(f"Model '{model_id}' not found")
        self.model_id = model_id

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class InvalidId(StoreError):
    code = 400


class InvalidFile(StoreError):
    code = 400


class TransferBusy(StoreError):
    code = 409


class IdTaken(StoreError):
    """An id that differs from an existing model's only by case: on a case-insensitive file
    system (macOS, Windows) the two would be one folder."""

    code = 409


class ReadOnlyStore(StoreError):
    code = 409


class ModelInUse(StoreError):
    """A base model that adapters were trained on: deleting it would leave them unusable."""

    code = 409


class Cancelled(StoreError):
    code = 409


class FetchError(StoreError):
    """A download that failed upstream; `code` is what the client is told (502 unless
    the source itself was wrong)."""

    def __init__(self, message: str, code: int = 502):
        super().__init__(message)
        self.code = code
