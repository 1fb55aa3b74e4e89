"""HTTP/1.1 by hand on a socket, for tests that must control the framing (pipelining,
chunked bodies, a body cut off)."""
from __future__ import annotations

import socket


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    out = b""
    while data := sock.recv(65536):
        out += data
    return out


def statuses(raw: bytes) -> list[int]:
    """The status codes of the responses in `raw`, in order."""
    return [int(chunk[:3]) for chunk in raw.split(b"HTTP/1.1 ")[1:]]
