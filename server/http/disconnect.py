"""Noticing that the client of a non-streamed request has hung up.

A streamed response learns it at its next write (gunicorn then closes the stream's
iterator). A non-streamed one writes nothing until the answer is whole, so without a
look at the socket it would go on generating, up to max_tokens, for nobody, and hold a
slot that queued requests are waiting for.
"""
from __future__ import annotations

import socket
import time

# How often the socket is looked at while a generation runs: the slot is freed at most
# this long (plus one decode step) after the client goes.
INTERVAL = 0.25


def peer_closed(sock) -> bool:
    """Whether the other end closed `sock`: it is readable and a peek reads nothing.

    Never blocks and consumes nothing: bytes a client may already have sent for its
    next request on a kept-alive connection stay in the socket for gunicorn.
    """
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False  # open and quiet: the usual case
    except ValueError:
        return False  # a TLS socket takes no recv flags: it cannot be told, so assume open
    except OSError:
        return True  # reset by the peer, or already shut down
    return data == b""


class ClientWatch:
    """Ask gone() as often as convenient; it looks at the socket at most every INTERVAL."""

    def __init__(self, req, interval: float = INTERVAL):
        # gunicorn puts the connection's socket in the WSGI environ; other servers (or
        # HTTP/2 streams) may not, and then there is nothing to watch.
        self.sock = req.env.get("gunicorn.socket")
        self.interval = interval
        self._next = time.monotonic() + interval

    def gone(self) -> bool:
        if self.sock is None:
            return False
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return peer_closed(self.sock)
