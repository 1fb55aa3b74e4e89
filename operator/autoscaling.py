"""The autoscaler's decision: how many pods a Model should have, from its pods' load. Pure.

What it does is what KubeAI's autoscaler does (a moving average of the requests in
flight divided by a target per replica, a scale-down delay), with the load read from
the pods' own gauges instead of a proxy's count:

- each tick, the requests in flight of all ready pods (running + waiting) is one sample;
- the samples of the last `window` seconds are averaged;
- wanted = ceil(average / targetRequests), within minReplicas..maxReplicas;
- more than now: at once. Fewer: only when the pods asked for in the last
  scaleDownDelaySeconds were all fewer (the highest of them wins, as the HPA's
  stabilization window does), when that much time has been watched, and when every pod
  that exists is ready (a pod still loading, or one that the router just woke from
  zero, has no load to show yet).

`Autoscaler.decide()` takes the sample and the time; the caller does the I/O
(controller.py scrapes the pods and writes replicas through the scale subresource).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from modelyard.server.shared.facts import DEFAULT_PARALLEL, METRIC_RUNNING, METRIC_WAITING

DEFAULT_MIN_REPLICAS = 1
DEFAULT_SCALE_DOWN_DELAY = 30


@dataclass(frozen=True)
class Settings:
    """A Model's spec.autoscaling, defaults applied."""

    min_replicas: int
    max_replicas: int
    target_requests: int
    scale_down_delay: float

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Settings | None":
        """None without spec.autoscaling: then the replicas are the user's (or an HPA's)."""
        autoscaling = spec.get("autoscaling")
        if not isinstance(autoscaling, dict) or autoscaling.get("maxReplicas") is None:
            return None
        return cls(
            min_replicas=int(autoscaling.get("minReplicas", DEFAULT_MIN_REPLICAS)),
            max_replicas=int(autoscaling["maxReplicas"]),
            target_requests=int(autoscaling.get("targetRequests") or DEFAULT_PARALLEL),
            scale_down_delay=float(autoscaling.get("scaleDownDelaySeconds", DEFAULT_SCALE_DOWN_DELAY)),
        )

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Decision:
    previous: int  # spec.replicas as it was
    replicas: int  # what it should be (the same when nothing changes)
    message: str = ""  # why, for the Event: "3 -> 5: 38 requests in flight, target 8 per replica"

    @property
    def changed(self) -> bool:
        return self.replicas != self.previous

    @property
    def reason(self) -> str:
        return "ScaledUp" if self.replicas > self.previous else "ScaledDown"


@dataclass
class Autoscaler:
    """The history of one Model: its load samples and the replicas each tick asked for."""

    window: float  # seconds of samples that are averaged
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time, in flight)
    wanted: deque[tuple[float, int, float]] = field(default_factory=deque)  # (time, replicas, average)
    since: float | None = None  # the first tick watched

    def decide(self, now: float, in_flight: float, current: int, settled: bool, settings: Settings) -> Decision:
        """The replicas for this tick. `in_flight`: the requests of all ready pods now;
        `current`: spec.replicas; `settled`: every pod that exists is ready and was read."""
        if self.since is None:
            self.since = now
        self.samples.append((now, in_flight))
        _drop_older(self.samples, now - self.window)
        average = sum(value for _, value in self.samples) / len(self.samples)
        wanted = settings.clamp(math.ceil(round(average / settings.target_requests, 6)))
        # Pods that exist but show no load yet (loading, or woken from zero by the router
        # for a request it holds) count as wanted: the delay starts once they serve.
        self.wanted.append((now, wanted if settled else max(wanted, current), average))
        _drop_older(self.wanted, now - settings.scale_down_delay)
        load = f"{_number(average)} requests in flight, target {settings.target_requests} per replica"

        if current < settings.min_replicas or current > settings.max_replicas:
            bound = "minReplicas" if current < settings.min_replicas else "maxReplicas"
            target = settings.clamp(current)
            return Decision(current, target, f"{current} -> {target}: {bound} is {target} ({load})")
        if wanted > current:
            return Decision(current, wanted, f"{current} -> {wanted}: {load}")
        highest, highest_average = max(((n, a) for _, n, a in self.wanted), key=lambda item: item[0])
        watched_long_enough = now - self.since >= settings.scale_down_delay
        if highest < current and watched_long_enough and settled:
            delay = _number(settings.scale_down_delay)
            return Decision(current, highest, f"{current} -> {highest}: at most {_number(highest_average)} requests in "
                                     f"flight in the last {delay} s, target {settings.target_requests} per replica")
        return Decision(current, current)


def in_flight(metrics_text: str, model: str) -> float:
    """The requests a server is decoding or holding for `model`, from its /metrics text.

    Reads the two gauges by name (the text format's sample lines: name{labels} value),
    so the operator needs no Prometheus parser. A model the server has not loaded yet
    has no samples: 0."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith((METRIC_RUNNING + "{", METRIC_WAITING + "{")):
            continue
        labels, _, value = line.rpartition("}")
        if _label(labels, "model") == model:
            try:
                total += float(value.split()[0])
            except (ValueError, IndexError):
                continue
    return total


def _label(labels: str, name: str) -> str | None:
    """A label's value in `name{a="x",b="y"`; model ids hold no quotes or commas."""
    for pair in labels.partition("{")[2].split(","):
        key, _, value = pair.partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def _drop_older(items: deque, oldest: float) -> None:
    # The newest item always stays: a window of 0 s still holds this tick's sample.
    while len(items) > 1 and items[0][0] < oldest:
        items.popleft()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
