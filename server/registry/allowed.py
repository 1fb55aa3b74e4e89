"""The folders of this machine that path-taking requests may name, and how their files are opened.

Silicon Studio's register and scan, Mullama's load by path, and fine-tuning's dataset and
export paths take a path from the request. Without a bound, anyone who may call them learns
which files exist, and a scan of `/` registers every GGUF on the machine for the registry to
serve. So a path must lie inside an allowed folder once its symlinks are resolved, and
outside them every path gets one answer (`PathNotAllowed`), whatever is or is not there.

The folders are `--allow-path` (repeatable) or MODELYARD_ALLOWED_PATHS (`none`: no folder).
By default, on one machine: the store and the usual model folders of the user (DEFAULT_FOLDERS);
in a Kubernetes pod: none (the chart sets the value).

`open_regular` opens a file without blocking (a FIFO named *.gguf would block `open()` for
ever) and checks that what it opened is a regular file.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping

from modelyard.server.registry.errors import InvalidFile, StoreError

# The folders where model tools keep GGUF files: a user's own, Hugging Face's cache (and
# llama.cpp's -hf downloads), Ollama's models, LM Studio's (new and old places).
DEFAULT_FOLDERS = ("~/models", "~/.cache/huggingface", "~/.cache/llama.cpp", "~/.ollama/models",
                   "~/.lmstudio/models", "~/.cache/lm-studio/models")
NONE = "none"


class PathNotAllowed(StoreError):
    """A path outside the allowed folders: one status and one message whatever is there."""

    code = 403


@dataclass(frozen=True)
class AllowedFolders:
    roots: tuple[Path, ...]

    @classmethod
    def of(cls, paths) -> "AllowedFolders":
        """From folder names; each is resolved (symlinks, `~`), as the paths checked are."""
        return cls(tuple(Path(os.path.realpath(os.path.expanduser(str(p)))) for p in paths))

    def check(self, path: str | Path, what: str = "path") -> Path:
        """The real path (symlinks resolved) of `path` when it lies inside an allowed folder;
        else PathNotAllowed, decided before anything at that path is looked at."""
        raw = str(path)
        refused = PathNotAllowed(
            f"The {what} '{raw}' is not inside a folder this server may read; the server's "
            "--allow-path (MODELYARD_ALLOWED_PATHS) names those folders")
        if not os.path.isabs(raw):  # said whatever the disk holds, so it tells nothing
            raise InvalidFile(f"Path '{raw}' must be absolute")
        if "\0" in raw:
            raise refused
        real = Path(os.path.realpath(raw))
        if not any(real == root or root in real.parents for root in self.roots):
            raise refused
        return real


def for_settings(settings, environ: Mapping[str, str] | None = None) -> AllowedFolders:
    """The folders `settings.allowed_paths` names; when it names none, the defaults: the
    store and DEFAULT_FOLDERS on one machine, nothing inside a Kubernetes pod."""
    environ = os.environ if environ is None else environ
    named = settings.allowed_paths
    if named is None:
        if environ.get("KUBERNETES_SERVICE_HOST"):
            return AllowedFolders(())
        named = [str(settings.store), *DEFAULT_FOLDERS]
    return AllowedFolders.of(p for p in named if p.strip().lower() != NONE)


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for reading, once it is known to be a regular file: opened without
    blocking (a FIFO or a device must not hold the request), checked with fstat on the open
    descriptor (no swap between a check and the open), then made blocking again."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidFile(f"'{path}' is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=1 << 20)
    except BaseException:
        os.close(fd)
        raise
