"""Receiving a multipart upload into a store transfer without copying the file bytes.

The request thread fills fixed buffers from the body (recv_into), the scanner marks
the file data in them, and each region goes to the transfer's FileWriter as a
memoryview: its threads write it to disk and hash it, then hand the buffer back.
Memory stays at BUFFERS x BUFFER_SIZE whatever the file's size.
"""
from __future__ import annotations

import queue
import threading

from modelyard.server.http.bodies import RawBody
from modelyard.server.http.multipart import Data, MultipartError, PartStart, Scanner
from modelyard.server.registry.transfer import Transfer

BUFFER_SIZE = 1 << 20
# Enough in flight for the disk writer and the hasher to each have work queued while
# the socket fills the next one.
BUFFERS = 8
SCAN_STEP = 256 * 1024


class _Lease:
    """A buffer back to the pool once the reader and every region handed out are done."""

    def __init__(self, pool: queue.Queue, buf: bytearray):
        self._pool, self._buf = pool, buf
        self._count = 1  # the reader's own hold
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self._count += 1

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            free = self._count == 0
        if free:
            self._pool.put(self._buf)


def receive(body: RawBody, boundary: bytes, transfer: Transfer, fields: dict[str, str]) -> set[str]:
    """Write each file part to its role (`fields` maps form field -> store role).

    Returns the roles received. A malformed, truncated or unexpected body raises
    MultipartError with a message for the client; the caller's transfer then discards
    what was written.
    """
    scanner = Scanner(boundary)
    pool: queue.Queue[bytearray] = queue.Queue()
    for _ in range(BUFFERS):
        pool.put(bytearray(BUFFER_SIZE))
    received: list[str] = []
    writer = None

    def scan(buf: bytearray, view: memoryview, lease: _Lease, start: int, end: int) -> int:
        nonlocal writer
        events, stop = scanner.scan(buf, start, end)
        for event in events:
            if isinstance(event, PartStart):
                writer = transfer.writer(_role(event.name, fields, received))
                received.append(fields[event.name])
            elif isinstance(event, Data):
                lease.hold()
                writer.write(view[event.start:event.stop], done=lease.release)
        return stop

    carry = b""
    while not scanner.done:
        buf = pool.get()
        view = memoryview(buf)
        view[:len(carry)] = carry
        lease = _Lease(pool, buf)
        try:
            start, end = 0, len(carry)
            while end < BUFFER_SIZE and not scanner.done:
                n = body.readinto(view[end:])
                end += n
                # Scan in large steps (fewer, bigger writes), but at once when the
                # body has ended, to find its closing boundary.
                if n == 0 or end - start >= SCAN_STEP or end == BUFFER_SIZE:
                    start = scan(buf, view, lease, start, end)
                if n == 0 and not scanner.done:
                    raise MultipartError("The multipart body ended before its closing boundary: "
                                         "the upload is truncated")
            carry = bytes(buf[start:end])
        finally:
            lease.release()
    _drain(body)  # an epilogue after the closing boundary, which clients rarely send
    return set(received)


def _role(name: str, fields: dict[str, str], received: list[str]) -> str:
    role = fields.get(name)
    if role is None:
        raise MultipartError(f"Unknown form field '{name}': send the model in "
                             f"{' and '.join(repr(f) for f in fields)}")
    if role in received:
        raise MultipartError(f"Form field '{name}' is sent twice")
    return role


def _drain(body: RawBody) -> None:
    scratch = memoryview(bytearray(64 * 1024))
    while body.readinto(scratch):
        pass
