"""What an engine tells a generation as it runs, one typed event at a time.

The scheduler puts them on a request's queue (in the runner process they cross the socket
to the server in batches, pickled as they are); `streams.Generation.take` reads them. A
generation gets `Token`s after one `Started`, and ends with exactly one `Ended` or `Failed`
(a request refused before it starts gets only that one).
"""
from __future__ import annotations

from typing import NamedTuple


class Started(NamedTuple):
    """The request has a slot; `cached` prompt tokens were reused from its cache."""
    cached: int


class Token(NamedTuple):
    """One sampled token; `logprobs` is (chosen, [(token, logprob), ...]) when asked for."""
    token: int
    logprobs: tuple | None = None


class Ended(NamedTuple):
    """The slot is released: `reason` is "stop", "length" or "cancelled"; `cached` tokens
    stay in the slot's cache for the next request."""
    reason: str
    cached: int = 0


class Failed(NamedTuple):
    """The generation cannot go on; `message` says why, in words for the client."""
    message: str


Event = Started | Token | Ended | Failed
FINAL = (Ended, Failed)  # after one of these, no more events for that request
