"""A test-only hook that stops the process at a named step of a commit, as kill -9 would.

MODELYARD_TEST_CRASH_AT=<step> is read here and nowhere else, once, when the module is
imported (a worker or a child process inherits it with the environment). Unset, every
call is one comparison with None. The durability tests use it to show that a restart
after each step leaves the old complete model or the new one.
"""
from __future__ import annotations

import os

STEPS = (
    "partial-synced",      # every new file is verified and fsynced under its .partial name
    "record-write",        # half-way through writing the metadata that records the new files
    "old-record-dropped",  # the old records are gone and the new ones are pending
    "renamed",             # the new files are under their final names, not yet recorded
    "metadata-write",      # half-way through writing the final metadata
)
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

_AT = os.environ.get("MODELYARD_TEST_CRASH_AT") or None


def crash_point(step: str) -> None:
    if _AT is not None and _AT == step:
        os._exit(EXIT_CODE)
