"""A transfer's writes into one model's folder: each file through its `.partial` name,
hashed as the bytes pass, verified and committed at once (commits.py says how a
commit survives a crash). Store.transfer() hands one out under the model's lock.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from modelyard.server.registry import formats
from modelyard.server.registry.crashpoints import crash_point
from modelyard.server.registry.diskio import PARTIAL, FileWriter, inside
from modelyard.server.registry.errors import InvalidFile

if TYPE_CHECKING:
    from modelyard.server.registry.store import Store


class Transfer:
    """Writes a model's files through `.partial` names, hashing as the bytes pass."""

    def __init__(self, store: Store, model_id: str, kind: str, roles: dict[str, str], cancel: threading.Event):
        self.store = store
        self.model_id = model_id
        self.kind = kind
        self.cancel = cancel
        self.folder = store.model_dir(model_id)
        self.roles = roles  # role -> file name (store.files_for)
        self._writers: dict[str, FileWriter] = {}

    def writer(self, role: str, resume: bool = False) -> "FileWriter":
        writer = FileWriter(self.partial_path(role), self.cancel, resume)
        self._writers[role] = writer
        return writer

    def partial_path(self, role: str) -> Path:
        if role not in self.roles:
            raise InvalidFile(
                f"A '{self.kind}' model has no '{role}' file; it takes: {', '.join(self.roles)}"
            )
        final = self.folder / self.roles[role]
        return final.with_name(final.name + PARTIAL)

    def place(self, role: str, source: Path) -> "FileWriter":
        """Take an existing file (a blob, another model's file) as this role's new content:
        a hard link where the filesystem allows, so no byte is copied and the source stays
        as it is (store files are only ever replaced by rename, never written in place).
        It is hashed and checked at commit like any written file. A file outside the store
        (one registered by path) is copied: its owner may rewrite it in place, which would
        change a linked copy under the store's feet."""
        partial = self.partial_path(role)
        partial.unlink(missing_ok=True)
        try:
            if not inside(source, self.store.root):
                raise OSError("not the store's file")
            os.link(source, partial)
        except OSError:  # another filesystem, or the user's file
            shutil.copyfile(source, partial)
        return self.writer(role, resume=True)

    def commit(self, sha256: dict[str, str] | None = None,
               sources: dict[str, str] | None = None,
               check: Callable[[dict[str, Path]], None] | None = None) -> dict:
        """Verify every written file, then move them into place and record them. `check`
        sees the written files ({role: path}) before the commit and may refuse them by raising
        (an adapter that does not fit its base): what it refuses is never ready.

        One metadata write decides the commit (see the module's notes): a crash before it
        leaves the old model, a crash after it is finished by the next writer.
        """
        records = {}
        for role, writer in self._writers.items():
            writer.finish()
            expected = (sha256 or {}).get(role)
            if expected and expected.lower() != writer.sha256:
                raise InvalidFile(
                    f"sha256 mismatch for the {role} file: expected {expected.lower()}, "
                    f"got {writer.sha256}"
                )
            try:
                formats.check(self.kind, role, writer.path)
            except formats.FormatError as exc:
                raise InvalidFile(str(exc)) from None
            records[role] = {
                "name": self.roles[role],
                "size": writer.size,
                "sha256": writer.sha256,
                # Where the file came from, so a fetch of another source downloads again.
                "source": (sources or {}).get(role),
            }
        if check is not None:
            check({role: writer.path for role, writer in self._writers.items()})
        crash_point("partial-synced")
        self.store._begin_commit(self.model_id, records)
        crash_point("old-record-dropped")
        self.store._finish_commit(self.model_id)
        self._writers.clear()
        return self.store.get(self.model_id)

    def discard(self) -> None:
        for writer in self._writers.values():
            writer.close()
            if not writer.keep:
                writer.path.unlink(missing_ok=True)
        self._writers.clear()
