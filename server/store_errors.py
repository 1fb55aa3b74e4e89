"""What can go wrong in the store; each has a message meant for the user."""
from __future__ import annotations


class StoreError(Exception):
    """A store operation that cannot be done; the message says why."""


class ModelNotFound(StoreError, KeyError):
    def __init__(self, model_id: str):
        super().__init__(f"Model '{model_id}' not found")
        self.model_id = model_id

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class InvalidId(StoreError):
    pass


class TransferBusy(StoreError):
    pass


class ReadOnlyStore(StoreError):
    pass


class InvalidFile(StoreError):
    pass


class Cancelled(StoreError):
    pass
