"""What every API family's generate routes share: running generations to their end while
the client is watched, so that one who hung up stops costing a slot."""
from __future__ import annotations

from typing import Callable

from modelyard.server.http.disconnect import ClientWatch
from modelyard.server.http.errors import ApiError
from modelyard.server.inference.llama.streams import Group


def run_to_end(req, group: Group, on_step: Callable | None = None) -> None:
    """Read every step of `group` (on_step(gen, step) for each), or raise 499 when the client
    hangs up meanwhile and 503 when a generation failed. The caller closes the group."""
    watch = ClientWatch(req)
    for item in group.steps(wait=watch.interval):
        if watch.gone():
            raise ApiError(499, "The client closed the connection before the answer was ready")
        if item is not None and item[1] is not None and on_step is not None:
            on_step(*item)
    failed = next((g.error for g in group.gens if g.error), None)
    if failed:
        raise ApiError(503, failed)
