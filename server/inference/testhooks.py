"""Test-only faults in the engines, switched on by environment variables read here once.

MODELYARD_TEST_FAIL_DECODE=<n>: the n-th llama_decode of a scheduler (counting from 1,
in each process) reports failure, as llama.cpp does when a batch cannot be placed. Each
GGUF engine runs in a runner process, which inherits the server's environment, so the
count is per runner. Unset, the hook passes the real return code through.
"""
from __future__ import annotations

import itertools
import os

_FAIL_DECODE_AT = int(os.environ.get("MODELYARD_TEST_FAIL_DECODE") or 0)
_decodes = itertools.count(1)


def decode_result(rc: int) -> int:
    """llama_decode's return code, or a failure when the test asked for one here."""
    if _FAIL_DECODE_AT and next(_decodes) == _FAIL_DECODE_AT:
        return -1
    return rc
