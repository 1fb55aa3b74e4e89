"""Download a model's files into the store: plain http(s) URLs, or Hugging Face.

No HTTP server code here: the registry's download route and `modelyard fetch` both call
`download_into` with a transfer they hold, and turn progress
callbacks into SSE events or JSON lines.

Everything is written through the store's `Transfer`, so the bytes are hashed as they
pass, land in `.partial` files, and only `commit()` (format check, sha256, rename) makes
the model ready.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

import httpx

from modelyard.server.registry import diskio, egress, hub
from modelyard.server.registry import store as st
from modelyard.server.registry.errors import FetchError

PROGRESS_INTERVAL = 0.25  # seconds between progress events: a few per second
HF_CHUNK = 1 << 20  # bytes per huggingface_hub read: the grain of its progress and resumes
RETRIES = 5  # attempts in a row that bring no new byte before giving up
BACKOFF = (0.5, 1, 2, 4, 8)
# A read that stalls this long counts as a dropped connection (and bounds how long a
# cancel can wait for a stuck socket; store.delete waits 30 s for the lock).
TIMEOUT = httpx.Timeout(15.0, read=20.0)
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# A download of unknown length checks the free space this often (bytes).
SPACE_CHECK = 256 << 20
HF_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_HF_RESOLVE = re.compile(r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")

Progress = Callable[[dict], None]


# ---- sources (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one file comes from: a plain URL, or a file in a Hugging Face repo."""

    text: str
    url: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str = "main"
    headers: tuple[tuple[str, str], ...] = ()  # sent with a plain URL's requests (a registry's token)
    size: int | None = None  # the size the source declared (a manifest, the hub's listing): no more is read

    @property
    def is_hf(self) -> bool:
        return self.repo_id is not None

    @property
    def identity(self) -> str:
        """What the store records as this file's origin."""
        return f"hf://{self.repo_id}/{self.filename}@{self.revision}" if self.is_hf else self.text


def parse_source(text: str, revision: str | None = None, hf_endpoint: str | None = None) -> Source:
    """`hf://org/repo/path`, a `.../org/repo/resolve/rev/path` URL on the hub, or any http(s) URL.

    `revision` applies to hf:// sources; a resolve URL carries its own. Raises ValueError.
    """
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme == "hf":
        path = (parts.netloc + parts.path).strip("/").split("/")
        if len(path) < 3 or not all(path):
            raise ValueError(f"'{text}' is not hf://<org>/<repo>/<path to file>")
        return Source(text, repo_id="/".join(path[:2]), filename="/".join(path[2:]),
                      revision=revision or "main")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{text}' is not an http(s) or hf:// URL")
    hub_hosts = set(HF_HOSTS)
    if hf_endpoint:
        hub_hosts.add(urlsplit(hf_endpoint).netloc)
    match = _HF_RESOLVE.match(parts.path)
    if parts.netloc in hub_hosts and match:
        org, repo, rev, filename = match.groups()
        # The query (?download=true) only matters to a browser.
        return Source(text, repo_id=f"{org}/{repo}", filename=unquote(filename),
                      revision=unquote(rev))
    return Source(text, url=text)


def error_event(exc: BaseException) -> dict:
    """The mModelStore API's error shape for a failed download, as an SSE event or a JSON line."""
    code = exc.code if isinstance(exc, st.StoreError) else 500
    message = str(exc) if code != 500 else f"Download failed: {type(exc).__name__}: {exc}"
    return {"error": {"code": code, "message": message}}


class _Reporter:
    """Turns byte counts into throttled progress events in the mModelStore API's shapes."""

    def __init__(self, emit: Progress | None, role: str):
        self.emit = emit
        self.role = role
        self.last = float("-inf")
        self.final_sent = False

    def __call__(self, size: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        final = total is not None and size >= total
        due = force or now - self.last >= PROGRESS_INTERVAL or (final and not self.final_sent)
        if self.emit is None or not due:
            return
        self.last, self.final_sent = now, final
        event = {"size": size}
        if total is not None:
            event["totalSize"] = total
        self.emit(event if self.role == "model" else {self.role: event})


# ---- the entry points -------------------------------------------------------------------


def plan_sources(url: str, mmproj_url: str | None = None, revision: str | None = None,
                 labels: tuple[str, str] = ("Field 'url'", "Field 'mmprojUrl'")) -> dict[str, Source]:
    """Sources by store role. Raises ValueError naming the bad one by its label."""
    from huggingface_hub import constants  # reads HF_ENDPOINT

    sources = {}
    for role, text, label in (("model", url, labels[0]), ("mmproj", mmproj_url, labels[1])):
        if text:
            try:
                sources[role] = parse_source(text, revision, constants.ENDPOINT)
            except ValueError as exc:
                raise ValueError(f"{label} is invalid: {exc}") from None
    return sources


def download_into(transfer: st.Transfer, sources: dict[str, Source], sha256: str | None = None,
                  on_progress: Progress | None = None, cancel: threading.Event | None = None,
                  keep_partial: bool = False, check: Callable[[dict], None] | None = None) -> dict:
    """Fill an open transfer from `sources` and commit it (`check`: Transfer.commit's). The
    caller holds (and ends) it.

    With `keep_partial`, a failure leaves the `.partial` files so a re-run resumes.
    """
    def check_cancel() -> None:
        if transfer.cancel.is_set() or (cancel is not None and cancel.is_set()):
            raise st.Cancelled(f"The download of model '{transfer.model_id}' was cancelled")

    keep = keep_partial
    done: list[st.FileWriter] = []
    try:
        for role, source in sources.items():
            report = _Reporter(on_progress, role)
            if source.is_hf:
                writer = _download_hf(transfer, role, source, report, check_cancel)
            else:
                writer = _HttpDownload(transfer, role, source.url, report, check_cancel, keep,
                                       dict(source.headers), source.size).run()
            writer.keep = keep
            done.append(writer)
        check_cancel()
        try:
            model = transfer.commit(sha256={"model": sha256} if sha256 else None,
                                    sources={r: s.identity for r, s in sources.items()}, check=check)
        except st.InvalidFile:
            keep = False  # complete but wrong: resuming it would only fail again
            raise
        keep = False  # nothing left to resume
        return model
    finally:
        if not keep:
            for writer in done:
                writer.keep = False
            for role in sources:
                _sidecar(transfer, role).unlink(missing_ok=True)
                shutil.rmtree(_hf_dir(transfer, role), ignore_errors=True)


# ---- plain http(s) ----------------------------------------------------------------------


def _sidecar(transfer: st.Transfer, role: str) -> Path:
    """Where a kept partial records its URL and validator, so a re-run knows it may resume.

    Its name ends in `.partial`, so store.recover() removes it with the partial.
    """
    return transfer.folder / f"{transfer.roles[role]}.source{st.PARTIAL}"


class _HttpDownload:
    """One file over http(s), resumed with Range after a drop (and across runs)."""

    def __init__(self, transfer: st.Transfer, role: str, url: str, report: _Reporter,
                 check_cancel: Callable[[], None], keep: bool, headers: dict | None = None,
                 declared: int | None = None):
        self.transfer, self.role, self.url = transfer, role, url
        self.headers = headers or {}
        self.declared = declared  # no byte past this is written (a manifest's layer size)
        self.report, self.check_cancel, self.keep = report, check_cancel, keep
        self.validator: str | None = None  # ETag or Last-Modified, for If-Range
        previous = self._read_sidecar()
        resume = previous is not None and previous.get("url") == url
        if resume:
            self.validator = previous.get("validator")
        self.writer = transfer.writer(role, resume=resume)
        self.writer.keep = keep

    def run(self) -> st.FileWriter:
        fruitless = 0
        while True:
            self.check_cancel()
            before = self.writer.size
            try:
                if self._attempt():
                    return self.writer
                problem = "the connection closed before the end of the file"
            except (httpx.TransportError, _Retryable) as exc:
                problem = str(exc) or type(exc).__name__
            fruitless = 0 if self.writer.size > before else fruitless + 1
            if fruitless >= RETRIES:
                raise FetchError(f"Download of {self.url} failed after {RETRIES} attempts: {problem}")
            # Waiting on the event makes a cancel during the back-off immediate.
            if self.transfer.cancel.wait(BACKOFF[fruitless - 1] if fruitless else 0.1):
                self.check_cancel()

    def _attempt(self) -> bool:
        """One GET from where the file stands. True when the file is complete."""
        headers = {**self.headers, "Accept-Encoding": "identity"}  # sizes and ranges are of the raw bytes
        if self.writer.size:
            headers["Range"] = f"bytes={self.writer.size}-"
            if self.validator:
                headers["If-Range"] = self.validator
        with egress.client(follow_redirects=True, timeout=TIMEOUT) as client:
            with client.stream("GET", self.url, headers=headers) as resp:
                total = self._check_response(resp)
                if resp.status_code == 416:
                    self.report(self.writer.size, total, force=True)
                    return True  # a kept partial that was already whole
                limit = self._limit(resp, total)
                self._save_sidecar(resp, total)
                self.report(self.writer.size, total, force=True)
                checked = self.writer.size
                # Chunks as the socket delivers them (up to 64 KiB): memory stays flat, and
                # a cancel is seen within one chunk even on a slow link. Raw bytes: sizes,
                # ranges and hashes are of what the server stores (identity was asked for).
                for chunk in resp.iter_raw():
                    self.check_cancel()
                    if limit is not None and self.writer.size + len(chunk) > limit:
                        raise FetchError(f"{self.url} sent more than its declared {limit} bytes; "
                                         f"the download was stopped there")
                    self.writer.write(chunk)
                    self.report(self.writer.size, total)
                    if limit is None and self.writer.size - checked >= SPACE_CHECK:
                        diskio.ensure_free(self.transfer.folder, 0)  # an endless body stops here
                        checked = self.writer.size
        if total is None and self.declared is None:
            return True  # no length to check against: the server closed the body cleanly
        return self.writer.size == (self.declared if self.declared is not None else total)

    def _limit(self, resp: httpx.Response, total: int | None) -> int | None:
        """The most bytes this file may have, checked against the free space before a byte is
        written: the declared size, else the server's. None when neither is known."""
        if resp.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise FetchError(f"{self.url} came with a content encoding; only plain bytes are accepted")
        if self.declared is not None and total is not None and total != self.declared:
            raise FetchError(f"{self.url} is {total} bytes, not the {self.declared} its source declared")
        limit = self.declared if self.declared is not None else total
        if limit is not None:
            diskio.ensure_free(self.transfer.folder, limit - self.writer.size)
        return limit

    def _check_response(self, resp: httpx.Response) -> int | None:
        """The file's full size (None if unknown); restarts from zero when a range was refused."""
        status = resp.status_code
        if status == 416 and self.writer.size:
            total = _content_range(resp.headers.get("content-range"))[1]
            if total == self.writer.size:
                return total
            self._restart()
            raise _Retryable("the server refused the resume range; starting over")
        if status in RETRY_STATUSES:
            raise _Retryable(f"{self.url} answered {status}")
        if status >= 400:
            raise FetchError(f"Download of {self.url} failed: the server answered "
                             f"{status} ({egress.describe(resp)})", code=status if status < 500 else 502)
        if status == 206:
            start, total = _content_range(resp.headers.get("content-range"))
            if start != self.writer.size:
                self._restart()
                raise _Retryable(f"the server resumed at byte {start}, not {self.writer.size}")
            return total
        if status != 200:
            raise FetchError(f"Download of {self.url} failed: unexpected status {status}")
        if self.writer.size:
            # Range ignored, or If-Range said the file changed: what we have is no prefix.
            self._restart()
        length = resp.headers.get("content-length")
        return int(length) if length and length.isdigit() else None

    def _restart(self) -> None:
        self.writer.close()
        self.writer = self.transfer.writer(self.role, resume=False)
        self.writer.keep = self.keep

    def _save_sidecar(self, resp: httpx.Response, total: int | None) -> None:
        etag = resp.headers.get("etag")
        # If-Range takes a strong ETag or a date; a weak ETag cannot be used.
        self.validator = (etag if etag and not etag.startswith("W/") else None) or \
            resp.headers.get("last-modified")
        record = {"url": self.url, "validator": self.validator, "totalSize": total}
        _sidecar(self.transfer, self.role).write_text(json.dumps(record))

    def _read_sidecar(self) -> dict | None:
        try:
            return json.loads(_sidecar(self.transfer, self.role).read_text())
        except (OSError, ValueError):
            return None


class _Retryable(Exception):
    """A failure worth another attempt (a 5xx, a refused range)."""


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(first byte, full size) of `bytes a-b/size` or `bytes */size`."""
    match = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", header or "")
    if not match:
        return None, None
    first, size = match.groups()
    return (int(first) if first else None), (int(size) if size != "*" else None)


# ---- Hugging Face -----------------------------------------------------------------------


def _hf_dir(transfer: st.Transfer, role: str) -> Path:
    """huggingface_hub's local_dir for one file: inside the model's folder, so the final
    move is a rename, and named `*.partial` so store.recover() removes it after a crash."""
    return transfer.folder / f"{transfer.roles[role]}.hf{st.PARTIAL}"


def _download_hf(transfer: st.Transfer, role: str, source: Source, report: _Reporter,
                 check_cancel: Callable[[], None]) -> st.FileWriter:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    # huggingface_hub reads the body in chunks of this size and reports (and resumes)
    # only whole chunks; its 10 MB default means one progress event, and one chance to
    # notice a cancel, per 10 MB. The module constant is its only knob.
    constants.DOWNLOAD_CHUNK_SIZE = HF_CHUNK

    local_dir = _hf_dir(transfer, role)
    # huggingface_hub names its temporary file per process, so an old one is never
    # resumed: drop it. A finished file from an earlier run is reused (its ETag matches).
    for stale in local_dir.rglob("*.incomplete"):
        stale.unlink(missing_ok=True)
    label = f"hf://{source.repo_id}/{source.filename}@{source.revision}"
    try:
        path = hf_hub_download(
            source.repo_id, source.filename, revision=source.revision,
            token=os.environ.get("HF_TOKEN") or None, local_dir=local_dir,
            tqdm_class=_hf_progress_class(report, check_cancel, transfer.folder, source.size),
        )
    except HfHubHTTPError as exc:
        raise hub.http_error(f"Download of {label}", exc) from None
    except HFValidationError as exc:
        raise FetchError(f"Invalid Hugging Face source {label}: {exc}", code=400) from None
    except (st.Cancelled, FetchError, diskio.InsufficientStorage):
        raise
    except Exception as exc:
        # Network failures (after hf_hub_download's own retries and resumes), disk full...
        raise FetchError(f"Download of {label} failed: {type(exc).__name__}: {exc}") from None
    check_cancel()
    # Hashing the finished file while it is read once costs a sequential read and no
    # copy: the rename keeps it in place on the same filesystem.
    os.replace(path, transfer.partial_path(role))
    shutil.rmtree(local_dir, ignore_errors=True)
    writer = transfer.writer(role, resume=True)
    report(writer.size, writer.size, force=True)
    return writer


def _hf_progress_class(report: _Reporter, check_cancel: Callable[[], None], folder: Path,
                       declared: int | None) -> type:
    """A stand-in for tqdm that huggingface_hub drives: reports progress, aborts on cancel,
    on a body longer than its declared size, and before a file the disk cannot hold.

    Not a tqdm subclass, so huggingface_hub passes it only tqdm's keyword arguments.
    """

    class HfProgress:
        def __init__(self, *args, total: int | None = None, initial: int = 0, **kwargs):
            self.n = initial
            self.total = total
            sizes = [s for s in (total, declared) if s is not None]
            self.limit = min(sizes) if sizes else None
            if self.limit is not None:
                diskio.ensure_free(folder, self.limit - initial)
            report(self.n, self.total, force=True)

        def update(self, n: int = 1) -> None:
            check_cancel()  # raising here unwinds hf_hub_download, which deletes its temp file
            if self.limit is not None and self.n + n > self.limit:
                raise FetchError(f"The hub sent more than the file's declared {self.limit} bytes; "
                                 f"the download was stopped there")
            self.n += n
            # The final 100% waits until the file is hashed into the store (see above).
            if self.total is None or self.n < self.total:
                report(self.n, self.total)

        def close(self) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> bool:
            return False

    return HfProgress
