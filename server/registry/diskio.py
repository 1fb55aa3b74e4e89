"""File primitives the store builds on: a hashing writer, atomic writes, folder locks."""
from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from modelyard.server.registry.crashpoints import crash_point
from modelyard.server.registry.errors import Cancelled, StoreError, TransferBusy

TMP_SUFFIX = ".tmp"
# What a download leaves free on the store's filesystem, whatever it was told: the store's
# metadata, the server's logs and the other writers need room too.
RESERVE = 1 << 30
# A file being written (an upload, a download, a derived file): never read as a model.
PARTIAL = ".partial"


class FileWriter:
    """A `.partial` file with a running sha256. With `resume`, it continues an old one.

    Writing and hashing each run on a thread of their own, in a pipeline: chunk N is
    hashed while chunk N+1 goes to the page cache and the request thread reads the
    socket. All three release the GIL on big buffers, so an upload runs at the speed
    of the slowest of them (sha256, about 1.8 GB/s here) instead of their sum. The
    queues are short, so memory stays flat.
    """

    QUEUE_CHUNKS = 4

    def __init__(self, path: Path, cancel: threading.Event, resume: bool = False):
        self.path = path
        self.cancel = cancel
        self.keep = False  # set by callers that want a partial kept for a later resume
        hasher = hashlib.sha256()
        self.size = 0
        if resume and path.exists():
            self._file = open(path, "r+b")
            while chunk := self._file.read(1 << 20):
                hasher.update(chunk)
                self.size += len(chunk)
        else:
            self._file = open(path, "wb")
        self.sha256 = ""
        self._error: BaseException | None = None
        self._to_disk: queue.Queue = queue.Queue(self.QUEUE_CHUNKS)
        self._to_hash: queue.Queue = queue.Queue(self.QUEUE_CHUNKS)
        self._threads = [threading.Thread(target=self._write_loop, daemon=True),
                         threading.Thread(target=self._hash_loop, args=(hasher,), daemon=True)]
        for t in self._threads:
            t.start()

    def _write_loop(self) -> None:
        while (item := self._to_disk.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(item[0])
                except BaseException as exc:  # a full disk: reported by the next write()
                    self._error = exc
            self._to_hash.put(item)
        self._to_hash.put(None)

    def _hash_loop(self, hasher) -> None:
        while (item := self._to_hash.get()) is not None:
            data, done = item
            try:
                if self._error is None:
                    hasher.update(data)
            finally:
                if done is not None:
                    done()
        self.sha256 = hasher.hexdigest()

    def write(self, data, done: Callable[[], None] | None = None) -> None:
        """Queue `data` (bytes, or a memoryview the caller keeps intact until `done()`)."""
        try:
            if self.cancel.is_set():
                raise Cancelled("The transfer was cancelled")
            if self._error is not None:
                raise self._error
        except BaseException:
            if done is not None:
                done()
            raise
        self._to_disk.put((data, done))
        self.size += len(data)

    def finish(self) -> None:
        self._stop()
        if self._error is not None:
            raise self._error
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def close(self) -> None:
        self._stop()
        if not self._file.closed:
            self._file.close()

    def _stop(self) -> None:
        if self._threads[0].is_alive():
            self._to_disk.put(None)
        for t in self._threads:
            t.join()


def atomic_write(path: Path, data: bytes, crash_step: str | None = None) -> None:
    """Replace `path` with `data` through a fsynced temporary file and a rename.

    A crash leaves the old file, and at worst a `.<name>*.tmp` that `tmp_files` finds.
    """
    # The writer's pid is in the name, so a later process can tell an abandoned file
    # from one that a live process is writing.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if crash_step is not None:
                f.flush()
                crash_point(crash_step)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def tmp_files(path: Path, abandoned_only: bool = False) -> list[Path]:
    """Temporary files of `atomic_write(path, ...)`; with `abandoned_only`, those of
    processes that are gone (a crash left them)."""
    found = list(path.parent.glob("." + path.name + ".*" + TMP_SUFFIX))
    if not abandoned_only:
        return found
    return [p for p in found if not _alive(p.name[len(path.name) + 2:].split(".", 1)[0])]


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def flock(folder: Path, blocking: bool, timeout: float = 0):
    """An exclusive lock on `<folder>/.lock`; the kernel drops it if the process dies."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not blocking:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TransferBusy(
                            f"Timed out waiting for the transfer on {folder.name} to stop"
                        ) from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, its links resolved, is in `folder` (False when it cannot be resolved)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


class InsufficientStorage(StoreError):
    code = 507


def ensure_free(folder: Path, needed: int, reserve: int = RESERVE) -> None:
    """Refuse a write of `needed` more bytes that would leave less than `reserve` free."""
    free = shutil.disk_usage(folder).free
    if needed + reserve > free:
        raise InsufficientStorage(
            f"Not enough disk space: the files need {needed} bytes and {free} are free "
            f"(a download keeps {reserve} bytes free)")
