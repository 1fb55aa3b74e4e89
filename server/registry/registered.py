"""Models registered where they lie: a GGUF file, or a folder holding one and its projector,
that the store points at instead of holding (Silicon Studio's register and scan, Mullama's
load by path).

The store keeps only the metadata of such a model. Each file's record carries its absolute
`path` and what `os.stat` said of it when it was checked and hashed (inode, mtime, size). The
user's file can change or vanish at any time, and the store never writes it: a record whose
file no longer stats the same makes the model not ready, with a reason, so no API serves or
loads a file other than the one that was verified. Registering again re-verifies it.

Pure choices (which files of a folder make a model; the kind is derive.gguf_kind's) are
apart from the disk reads (`stat_key`, `hash_file`, `scan`, `prepare`); Store.register_path
records what `prepare` found.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.server.registry import derive, formats
from modelyard.server.registry.allowed import AllowedFolders, PathNotAllowed, open_regular
from modelyard.server.registry.diskio import inside
from modelyard.server.registry.errors import InvalidFile
from modelyard.server.shared.facts import KINDS

PROJECTOR_ARCHITECTURE = "clip"
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ScanLimits:
    """How far a scan goes: folders below the root, entries looked at, seconds. The usual
    model folders are two to five deep (Hugging Face's cache: hub/models--org--name/snapshots/rev)."""

    depth: int = 8
    entries: int = 20_000
    seconds: float = 30.0


def is_projector_name(name: str) -> bool:
    return "mmproj" in name.lower()


def stat_key(path: str | Path) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of a file, or None when it is gone or not a file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def is_registered(meta: dict) -> bool:
    return bool(meta.get("registeredPath"))


def record_key(record: dict) -> tuple[int, int, int]:
    return (record["ino"], record["mtimeNs"], record["size"])


def change_problem(role: str, record: dict, now: tuple[int, int, int] | None) -> str | None:
    """Why a registered file is no longer the one that was verified, or None (pure)."""
    path = record["path"]
    what = "projector" if role == "mmproj" else "model file"
    if now is None:
        return f"The registered {what} {path} is gone; register it again once it is back"
    if now != record_key(record):
        detail = (f"its size went from {record['size']} to {now[2]} bytes" if now[2] != record["size"]
                  else "it was modified or replaced")
        return (f"The registered {what} {path} changed on disk since it was verified ({detail}); "
                f"register it again to verify the new file")
    return None


@dataclass(frozen=True)
class Found:
    """The files one registration takes: the model, and a vlm's projector."""

    model: Path
    mmproj: Path | None = None


@dataclass
class ScanResult:
    found: list[Found] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}


def _architecture(path: Path) -> str | None:
    with open_regular(path) as f:
        return formats.read_gguf_metadata(f, os.fstat(f.fileno()).st_size, path.name).get("general.architecture")


def _gguf_problem(path: Path, role: str = "model") -> str | None:
    """What is wrong with the GGUF at `path`, or None. Opened without blocking and only when it
    is a regular file: a FIFO named *.gguf is a problem, not a request that hangs."""
    try:
        with open_regular(path) as f:
            problem = formats.gguf_problem(f, size=os.fstat(f.fileno()).st_size)
    except InvalidFile:
        return "it is not a regular file"
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    return f"The {role} file is not a usable GGUF file: {problem}" if problem else None


def pair(models: list[Path], projectors: list[Path]) -> list[Found]:
    """Which projector goes with which model in one folder (pure): a lone model takes the lone
    projector; with several, a projector goes to the model whose name shares the longest
    start with its own once `mmproj` is dropped."""
    if not projectors:
        return [Found(m) for m in models]
    if len(models) == 1:
        return [Found(models[0], sorted(projectors)[0])]

    def affinity(model: Path, projector: Path) -> int:
        a = model.stem.lower()
        b = projector.stem.lower().replace("mmproj-", "").replace("-mmproj", "").replace("mmproj", "")
        return len(os.path.commonprefix([a, b]))

    out = []
    for model in models:
        best = max(projectors, key=lambda p: affinity(model, p))
        out.append(Found(model, best if affinity(model, best) > 0 else None))
    return out


def resolve(path: Path) -> Found:
    """The files a registration of `path` takes: the file itself, or the one model GGUF of a
    folder and its projector. Raises InvalidFile saying what is wrong."""
    if not path.is_absolute():
        raise InvalidFile(f"Path '{path}' must be absolute")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InvalidFile(f"'{path}' is not a .gguf file")
        return Found(path)
    if not path.is_dir():
        raise InvalidFile(f"'{path}' does not exist (or is neither a file nor a folder)")
    ggufs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".gguf")
    models = [p for p in ggufs if not is_projector_name(p.name)]
    projectors = [p for p in ggufs if is_projector_name(p.name)]
    # Counts, not names: an error never lists what else a folder holds.
    if len(models) != 1:
        raise InvalidFile(f"The folder '{path}' must hold exactly one model GGUF (besides an mmproj "
                          f"projector) to be registered as one model; it holds {len(models)}. "
                          f"Register a file, or scan the folder")
    if len(projectors) > 1:
        raise InvalidFile(f"The folder '{path}' holds {len(projectors)} projectors; register the files "
                          "one by one")
    return Found(models[0], projectors[0] if projectors else None)


def check(found: Found) -> str:
    """Check the files as an upload's are checked; returns the model's architecture.
    Raises InvalidFile."""
    problem = _gguf_problem(found.model)
    if problem:
        raise InvalidFile(f"{found.model}: {problem}")
    architecture = _architecture(found.model)
    if architecture == PROJECTOR_ARCHITECTURE:
        raise InvalidFile(f"{found.model} is a vision projector (clip), not a model; register "
                          f"the folder that holds it with its model")
    if found.mmproj is not None:
        problem = _gguf_problem(found.mmproj, "mmproj")
        if problem:
            raise InvalidFile(f"{found.mmproj}: {problem}")
    return architecture


def hash_file(path: Path) -> dict:
    """The record of a file as it is now: sha256, size, and its stat to notice a change.
    Raises InvalidFile when the file changes while it is read."""
    before = stat_key(path)
    if before is None:
        raise InvalidFile(f"'{path}' is gone")
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    if stat_key(path) != before:
        raise InvalidFile(f"'{path}' changed while it was being verified; register it again "
                          f"once it is complete")
    ino, mtime_ns, size = before
    return {"name": path.name, "size": size, "sha256": digest.hexdigest(), "source": None,
            "path": str(path), "ino": ino, "mtimeNs": mtime_ns}


@dataclass(frozen=True)
class Registration:
    """What registering a file records: its kind, its files' records and the path as given."""

    kind: str
    records: dict
    path: str


def prepare(path: str | Path, models_dir: Path, kind: str | None = None,
            mmproj: str | Path | None = None) -> Registration:
    """The GGUF file at `path` (or the folder holding one with its `mmproj` projector, or the
    file with the projector `mmproj` names) checked as an upload is and hashed, for
    Store.register_path to record where it lies; nothing is written. `kind` defaults to what
    the files say (derive.gguf_kind: vlm with a projector, embed when the model pools, else
    llm); a given llm that pools is an embed. Files inside the store (`models_dir`) are
    refused. Raises InvalidFile."""
    target = Path(path)
    if target.is_absolute():
        target = Path(os.path.normpath(target))  # no '..' in what is recorded
    found = resolve(target)
    if mmproj is not None:
        if found.mmproj is not None or not target.is_file():
            raise InvalidFile("Name the projector of a model file, not of a folder")
        found = Found(found.model, resolve(Path(mmproj)).model)
    for file in (found.model, found.mmproj):
        if file is not None and inside(file, models_dir):
            raise InvalidFile(f"'{file}' is inside the store already; use its model instead")
    check(found)
    kind = _kind(found, kind, target)
    records = {"model": hash_file(found.model)}
    if found.mmproj is not None:
        records["mmproj"] = hash_file(found.mmproj)
    return Registration(kind, records, str(target))


def _kind(found: Found, kind: str | None, target: Path) -> str:
    """The kind a registration records: the given one settled by the file's header, or the
    header's own; only a GGUF kind, and a projector exactly when it is a vlm."""
    try:
        meta = formats.gguf_metadata(found.model)
    except formats.FormatError as exc:  # changed since it was checked
        raise InvalidFile(str(exc)) from None
    kind = derive.settled_kind(kind, meta) if kind else derive.gguf_kind(meta, found.mmproj is not None)
    if kind not in KINDS or kind == "onnx":
        raise InvalidFile(f"Kind '{kind}' cannot be registered by path: only GGUF models (llm, vlm, embed)")
    if kind == "vlm" and found.mmproj is None:
        raise InvalidFile(f"A vlm needs its projector: register the folder that holds "
                          f"'{found.model.name}' and an mmproj GGUF")
    if kind != "vlm" and found.mmproj is not None:
        raise InvalidFile(f"Only a vlm takes a projector; '{target}' holds {found.mmproj.name}")
    return kind


def scan(root: Path, exclude: Path | None = None, allowed: AllowedFolders | None = None,
         limits: ScanLimits = ScanLimits()) -> ScanResult:
    """Every sound model GGUF under `root` (recursively, within `limits`), each paired with a
    projector of its folder; what is not, in `skipped` with why. `exclude` (the store's own
    folder) is not entered; a file whose real path is outside `allowed` is skipped. Raises
    InvalidFile when `root` is not a folder."""
    if not root.is_absolute():
        raise InvalidFile(f"Path '{root}' must be absolute")
    if not root.is_dir():
        raise InvalidFile(f"'{root}' is not a folder")
    result = ScanResult()
    deadline = time.monotonic() + limits.seconds
    seen = 0
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        seen += len(dirs) + len(files)
        stop = _stop_reason(seen, deadline, limits)
        if stop:
            result.skipped.append({"path": str(here), "reason": stop})
            break
        if len(here.parts) - base_depth >= limits.depth:
            if dirs:
                result.skipped.append({"path": str(here), "reason": f"the scan goes {limits.depth} folders "
                                       "deep at most; scan this folder itself to go further"})
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or not _same(here / d, exclude)))
        models, projectors = _sort_folder(here, files, allowed, result.skipped)
        found = pair(models, projectors)
        result.found += found
        used = {f.mmproj for f in found}
        for projector in projectors:
            if projector not in used:
                result.skipped.append({"path": str(projector),
                                       "reason": "a vision projector with no model beside it"})
    return result


def _stop_reason(seen: int, deadline: float, limits: ScanLimits) -> str | None:
    if seen > limits.entries:
        return f"the scan stopped after {limits.entries} entries; scan a smaller folder"
    if time.monotonic() > deadline:
        return f"the scan stopped after {limits.seconds:g} seconds; scan a smaller folder"
    return None


def _sort_folder(here: Path, files: list[str], allowed: AllowedFolders | None,
                 skipped: list[dict]) -> tuple[list[Path], list[Path]]:
    """(models, projectors) among one folder's sound GGUF files; the others go to `skipped`."""
    models, projectors = [], []
    for name in sorted(files):
        path = here / name
        if not name.lower().endswith(".gguf"):
            continue
        if allowed is not None:
            try:
                allowed.check(path)
            except PathNotAllowed:
                skipped.append({"path": str(path), "reason": "a link to a place outside the allowed folders"})
                continue
        problem = _gguf_problem(path)
        if problem:
            skipped.append({"path": str(path), "reason": problem})
            continue
        try:
            arch = _architecture(path)
        except (formats.FormatError, InvalidFile, OSError) as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        if arch == PROJECTOR_ARCHITECTURE or is_projector_name(name):
            projectors.append(path)
        else:
            models.append(path)
    return models, projectors


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def id_for(path: Path) -> str:
    """A registry id from a file or folder name: the characters ids allow, others as '-'."""
    stem = path.name[:-5] if path.name.lower().endswith(".gguf") else path.name
    out = "".join(c if c.isalnum() and c.isascii() or c in "._-" else "-" for c in stem)
    while ".." in out:
        out = out.replace("..", ".")
    return out.lstrip(".-")[:255] or "model"
