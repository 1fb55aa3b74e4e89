"""What the status routes report of the machine: memory of this server and its runner
processes, and the machine's total (Linux's /proc; elsewhere 0)."""
from __future__ import annotations

import os
from typing import Iterable


def rss_bytes(pid: int) -> int:
    """A process's resident memory, or 0 when it cannot be read (gone, not Linux)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_used(runner_pids: Iterable[int]) -> int:
    """This server's memory and its runners' (each model's weights live in its runner)."""
    return rss_bytes(os.getpid()) + sum(rss_bytes(pid) for pid in runner_pids)


def memory_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def gpu_available() -> bool:
    """Whether this server's llama.cpp build can offload layers to a GPU (CUDA, Metal, ...)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())
