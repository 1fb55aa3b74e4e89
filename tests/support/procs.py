"""Processes under a server, read from /proc: its gunicorn worker and the worker's runners."""
from __future__ import annotations

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def worker_of(master: int) -> int:
    """The gunicorn worker: the master's one child (its title may be set by setproctitle)."""
    (worker,) = children(master)
    return worker


def runners(master: int) -> dict[str, int]:
    """{model id: pid} of the runner processes under a server's worker."""
    out = {}
    for pid in children(worker_of(master)):
        args = cmdline(pid)
        if "modelyard.server.inference.llama.runner" in args:
            out[args[args.index("modelyard.server.inference.llama.runner") + 2]] = pid
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
