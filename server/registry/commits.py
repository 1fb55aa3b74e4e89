"""A model's files put into place (a commit), and what start-up finishes or clears of the work
a crash cut short (recover). Store holds the model's lock and writes its metadata; this module
does what happens to the files between those writes.

A commit is decided by one metadata write: it drops the old records of the files it replaces
and records the new ones as `pending` (`begun`). From then on the commit only rolls forward:
the renames and the final metadata write (`rolled_forward`) are redone by the next writer of
the model (a transfer or the start-up recovery) if a crash cut them short. Before that write,
the old model is untouched. So after a crash at any step a restart shows the old complete
model or the new one, and a model is never ready with a file it did not verify.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from modelyard.server.registry.crashpoints import crash_point
from modelyard.server.registry.diskio import PARTIAL, flock, fsync_dir, tmp_files
from modelyard.server.shared.facts import id_problem

META = "model.json"
# Marks a record that a pull or a create made for work not finished yet: a crash leaves it
# behind, and the next start removes it (a failed or cancelled one is removed at once).
PROVISIONAL = "provisional"


def begun(meta: dict, records: dict[str, dict]) -> dict:
    """The metadata whose write decides a commit: old records out, the new ones pending."""
    meta = dict(meta)
    files = dict(meta.get("files", {}))
    for role in records:
        files.pop(role, None)
    meta["files"] = files
    meta["pending"] = records
    return meta


def rolled_forward(folder: Path, meta: dict) -> dict:
    """Rename a decided commit's verified `.partial` files into place, and return the metadata
    that records them, for the caller to write. Idempotent: a file renamed already is not
    renamed again. A file not on disk at its verified size is left unrecorded, so the model is
    not ready."""
    meta = dict(meta)
    pending = meta["pending"]
    for record in pending.values():
        final = folder / record["name"]
        partial = final.with_name(final.name + PARTIAL)
        if partial.exists():
            os.replace(partial, final)
    fsync_dir(folder)
    crash_point("renamed")
    files = dict(meta.get("files", {}))
    for role, record in pending.items():
        try:
            whole = (folder / record["name"]).stat().st_size == record["size"]
        except FileNotFoundError:
            whole = False
        if whole:  # otherwise left unrecorded: the model is not ready
            files[role] = record
    meta["files"] = files
    del meta["pending"]
    return meta


def drop_resume_files(folder: Path, pending: dict[str, dict]) -> None:
    """What a download kept to resume these files (its source record, its huggingface_hub
    folder): obsolete once they are committed."""
    for record in pending.values():
        for path in folder.glob(record["name"] + ".*" + PARTIAL):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def recover(models_dir: Path, finish_commit: Callable[[str], bool]) -> list[str]:
    """In each model's folder under its lock: finish the commit a crash interrupted
    (`finish_commit(model_id)`, the store's), remove the partial and temporary files it left,
    and the folder of a copy, pull or create it cut short. Returns what was removed. A folder
    whose lock is held (a live `modelyard fetch`) is left as it is."""
    removed = []
    for folder in models_dir.iterdir():
        if not folder.is_dir():
            continue
        if folder.name.startswith(".copy-"):  # a copy that a crash cut short
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
            continue
        try:
            with flock(folder, blocking=False):
                if (folder / META).exists() and id_problem(folder.name) is None:
                    finish_commit(folder.name)
                for path in tmp_files(folder / META):
                    path.unlink(missing_ok=True)
                    removed.append(str(path))
                for path in folder.glob("*" + PARTIAL):
                    if path.is_dir():  # fetch's huggingface_hub download folder
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(str(path))
                if not (folder / META).exists() or is_provisional(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(str(folder))
        except BlockingIOError:
            continue  # a live `modelyard fetch` owns it
    return removed


def is_provisional(folder: Path) -> bool:
    """A record whose pull or create a crash cut short (unreadable: not one of those)."""
    try:
        return json.loads((folder / META).read_bytes()).get(PROVISIONAL) is True
    except (OSError, ValueError, AttributeError):
        return False
