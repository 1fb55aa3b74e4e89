"""Picking a pod: consistent hashing with bounded loads (CHWBL), least-loaded as the fallback.

As KubeAI's load balancer (internal/loadbalancer/balance_chwbl.go, balance_least_load.go):
each endpoint sits on a hash ring `replication` times; a request's key (the model as named
plus the start of its conversation) hashes to a point on the ring, and the walk clockwise
takes the first endpoint whose in-flight load, with the request being placed, is within the
bound `(total + 1) / n * load_factor`, so one conversation stays on the pod whose prefix cache
holds it until that pod is loaded well above the mean, then spills to the next on the ring.
Requests without a key (embeddings, model routes) go to the least-loaded endpoint.
Pure: no I/O, no clock, no lock (the router's event loop is its only caller).
"""
from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

DEFAULT_REPLICATION = 256
DEFAULT_LOAD_FACTOR = 1.25


def ring_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def load_ok(load: int, total: int, n: int, load_factor: float) -> bool:
    """KubeAI's bound (chwblLoadOK): the +1s count the request being placed, in the endpoint's
    load and in the total. With fewer requests in flight than about n / load_factor, no
    endpoint passes, and the request goes to the first on the ring: its home."""
    if total == 0:
        return True
    return load + 1 <= (total + 1) / n * load_factor


class Balancer:
    """One Model's endpoints (pod addresses) and the router's in-flight requests to each."""

    def __init__(self, replication: int = DEFAULT_REPLICATION, load_factor: float = DEFAULT_LOAD_FACTOR) -> None:
        self.replication = replication
        self.load_factor = load_factor
        self.loads: dict[str, int] = {}
        self._ring: list[tuple[int, str]] = []
        self._hashes: list[int] = []
        self._turn = 0

    @property
    def endpoints(self) -> list[str]:
        return sorted(self.loads)

    def set_endpoints(self, endpoints: Iterable[str]) -> None:
        """The ready endpoints now; the loads of the ones that stay are kept."""
        wanted = set(endpoints)
        if wanted == set(self.loads):
            return
        self.loads = {e: self.loads.get(e, 0) for e in sorted(wanted)}
        self._ring = sorted((ring_hash(f"{e}{i}"), e) for e in wanted for i in range(self.replication))
        self._hashes = [h for h, _ in self._ring]

    @property
    def total(self) -> int:
        return sum(self.loads.values())

    def pick(self, key: str | None, exclude: Iterable[str] = ()) -> str | None:
        """The endpoint for a request: by `key` on the ring, or the least loaded without one.
        `exclude` holds endpoints that already failed this request. None if none is left."""
        skip = set(exclude)
        if not key:
            return self._least_loaded(skip)
        return self._on_ring(key, skip)

    def _on_ring(self, key: str, skip: set[str]) -> str | None:
        if not self._ring:
            return None
        start = bisect.bisect_left(self._hashes, ring_hash(key)) % len(self._ring)
        total, n = self.total, len(self.loads)
        first, seen = None, set()
        for step in range(len(self._ring)):
            endpoint = self._ring[(start + step) % len(self._ring)][1]
            if endpoint in seen or endpoint in skip:
                continue
            seen.add(endpoint)
            first = first or endpoint
            if load_ok(self.loads[endpoint], total, n, self.load_factor):
                return endpoint
            if len(seen) + len(skip & self.loads.keys()) >= n:
                break
        # Every endpoint is above the bound: the first one on the ring, as KubeAI does.
        return first

    def _least_loaded(self, skip: set[str]) -> str | None:
        candidates = [e for e in self.loads if e not in skip]
        if not candidates:
            return None
        # Ties go round in turn, so an idle Model's pods share sequential requests.
        self._turn += 1
        offset = self._turn % len(candidates)
        rotated = candidates[offset:] + candidates[:offset]
        return min(rotated, key=lambda e: self.loads[e])

    def acquire(self, endpoint: str) -> None:
        if endpoint in self.loads:
            self.loads[endpoint] += 1

    def release(self, endpoint: str) -> None:
        if self.loads.get(endpoint, 0) > 0:
            self.loads[endpoint] -= 1
