"""Content-addressed blobs, as Ollama's `/api/blobs/sha256:...` keeps them: files a client
uploads before `create` names them in `files`.

    <root>/blobs/sha256-<hex>       a verified blob
    <root>/blobs/.upload-*.partial  a blob being received (removed on failure or restart)

A blob is stored only when its bytes hash to its name, so a model created from it can
link it without hashing the client's claim twice.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Callable

from modelyard.server.registry.diskio import FileWriter, fsync_dir
from modelyard.server.registry.errors import InvalidFile, InvalidId, ReadOnlyStore

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def digest_hex(digest: str) -> str:
    """The hex of `sha256:<64 hex>` (or Ollama's file form `sha256-<hex>`). Raises InvalidId."""
    match = _DIGEST.match(digest or "")
    if not match:
        raise InvalidId(f"Invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return match.group(1)


class Blobs:
    def __init__(self, root: Path | str):
        self.folder = Path(root) / "blobs"

    def path(self, digest: str) -> Path:
        return self.folder / f"sha256-{digest_hex(digest)}"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def receive(self, digest: str, read: Callable[[memoryview], int]) -> bool:
        """Store the bytes `read` fills buffers with (0 at the end) under `digest`.
        Returns False when the blob was already there. A mismatch raises InvalidFile."""
        final = self.path(digest)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".partial", dir=self.folder)
        except OSError as exc:
            raise ReadOnlyStore(f"Blobs cannot be written here: {exc}") from None
        os.close(fd)
        writer = FileWriter(Path(tmp), threading.Event())
        try:
            buf = memoryview(bytearray(1 << 20))
            while n := read(buf):
                writer.write(bytes(buf[:n]))
            writer.finish()
            if writer.sha256 != digest_hex(digest):
                raise InvalidFile(f"The body's sha256 is {writer.sha256}, not the digest in the path "
                                  f"({digest_hex(digest)})")
            existed = final.exists()
            os.replace(tmp, final)
            fsync_dir(self.folder)
            return not existed
        finally:
            writer.close()
            Path(tmp).unlink(missing_ok=True)

    def recover(self) -> list[str]:
        """Remove uploads a crash cut short; returns what was removed."""
        removed = []
        for path in self.folder.glob(".upload-*.partial"):
            path.unlink(missing_ok=True)
            removed.append(str(path))
        return removed
