"""A local file server for download tests, which also stands in for the Hugging Face hub.

Plain files live at `/files/<name>`. Hub files answer HEAD and GET on
`/<org>/<repo>/resolve/<revision>/<file>` with ETag, X-Repo-Commit and Content-Length,
as huggingface_hub 2.4.0 expects (point it here with HF_ENDPOINT), and a repo's file list
answers `/api/models/<org>/<repo>/tree/<revision>` (HfApi.list_repo_tree, one page). Both honour Range and
If-Range; a file can be told to drop the connection once after N bytes, to trickle, or to
ignore Range. Every request is logged, so tests can assert what the client sent.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$")
CHUNK = 64 * 1024


@dataclass
class Served:
    data: bytes
    etag: str = ""
    drop_after: int | None = None  # close the connection once, after this many body bytes
    rate: float | None = None  # bytes per second
    ignore_range: bool = False
    stall: float = 0  # seconds of silence between the headers and the body
    token: str | None = None  # gated: needs `Authorization: Bearer <token>`

    def __post_init__(self):
        self.etag = self.etag or hashlib.sha256(self.data).hexdigest()


@dataclass
class Logged:
    method: str
    path: str
    headers: dict = field(default_factory=dict)  # names in lower case


class FileHub:
    def __init__(self, host: str = "127.0.0.1"):
        self.files: dict[str, Served] = {}
        self.log: list[Logged] = []
        self.server = ThreadingHTTPServer((host, 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FileHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, name: str, data: bytes, **options) -> str:
        """Serve `data` at /files/<name>; returns its URL."""
        self.files[f"files/{name}"] = Served(data, **options)
        return f"{self.url}/files/{name}"

    def add_hf(self, repo_id: str, filename: str, data: bytes, **options) -> Served:
        """Serve a hub file at every revision name that resolves to COMMIT (main, COMMIT)."""
        served = Served(data, **options)
        self.files[f"hf:{repo_id}/{filename}"] = served
        return served

    def tree(self, repo_id: str) -> list[dict]:
        prefix = f"hf:{repo_id}/"
        return [{"type": "file", "path": key[len(prefix):], "size": len(served.data),
                 "oid": hashlib.sha1(served.data).hexdigest()}
                for key, served in sorted(self.files.items()) if key.startswith(prefix)]

    def gets(self, path_part: str) -> list[Logged]:
        return [r for r in self.log if r.method == "GET" and path_part in r.path]

    def lookup(self, path: str) -> Served | None:
        path = path.split("?", 1)[0]
        match = _RESOLVE.match(path)
        if match:
            repo_id, revision, filename = match.groups()
            if revision not in ("main", COMMIT):
                return None
            return self.files.get(f"hf:{repo_id}/{filename}")
        return self.files.get(path.lstrip("/"))


def _handler(hub: FileHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.log.append(Logged(self.command, self.path,
                                  {k.lower(): v for k, v in self.headers.items()}))
            tree = _TREE.match(self.path.split("?", 1)[0])
            if tree:
                return self._tree(*tree.groups())
            served = hub.lookup(self.path)
            if served is None:
                return self._status(404, {"X-Error-Code": "EntryNotFound"})
            if served.token and self.headers.get("Authorization") != f"Bearer {served.token}":
                return self._status(401, {"X-Error-Code": "GatedRepo"})
            size = len(served.data)
            start, status = 0, 200
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and not served.ignore_range and (if_range is None or if_range.strip('"') == served.etag):
                start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                if start >= size:
                    return self._status(416, {"Content-Range": f"bytes */{size}"})
                status = 206
            self.send_response(status)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{served.etag}"')
            self.send_header("X-Repo-Commit", COMMIT)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            if body:
                self._body(served, start)

        def _body(self, served: Served, start: int) -> None:
            self.wfile.flush()
            time.sleep(served.stall)
            sent, began = 0, time.monotonic()
            for offset in range(start, len(served.data), CHUNK):
                chunk = served.data[offset:offset + CHUNK]
                if served.drop_after is not None and sent + len(chunk) > served.drop_after:
                    self.wfile.write(chunk[: served.drop_after - sent])
                    self.wfile.flush()
                    served.drop_after = None  # once
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(chunk)
                except OSError:
                    self.close_connection = True
                    return  # the client went away
                sent += len(chunk)
                if served.rate:
                    ahead = sent / served.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

        def _tree(self, repo_id: str, revision: str) -> None:
            entries = hub.tree(repo_id)
            if revision not in ("main", COMMIT) or not entries:
                return self._status(404, {"X-Error-Code": "RepoNotFound"})
            body = json.dumps(entries).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _status(self, code: int, headers: dict) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
