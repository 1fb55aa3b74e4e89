"""What the kopf handlers call, and the poller that stands in for kopf timers.

kopf puts a finalizer on every object that has a timer or a daemon, and a finalizer
can leave a deleted Model stuck (KubeAI#286). One poller task for all Models needs
none: it reads the progress of downloading Models every few seconds, retries the
reconciliations that failed, and reconciles every Model now and then. The autoscaler
is a second such task, for the Models with spec.autoscaling (one tick for all of them
every autoscale_interval), rather than a kopf timer or daemon per Model, for the same
reason.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import names
from .autoscaling import Autoscaler
from .finetunes import reconcile_finetune
from .reconcile import DOWNLOADING, Context, owner_of, reconcile_model, update_progress
from .scaling import autoscale_model
from .training import FINISHED

logger = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
_PARALLEL = 8  # API calls in flight from the poller


class Controller:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._guard = threading.Lock()
        self._phases: dict[Key, str | None] = {}  # every Model seen, with its last phase
        self._retries: set[Key] = set()
        self._autoscaled: dict[Key, dict[str, Any]] = {}  # the Models with spec.autoscaling, as last seen
        self._autoscalers: dict[Key, Autoscaler] = {}  # their load histories
        # FineTunes not finished yet, with their base Model's name: a running one's progress
        # is read every progress_interval, and a change of its base reconciles a waiting one.
        self._trainings: dict[Key, str] = {}

    def handle_model_event(self, event_type: str | None, model: dict[str, Any]) -> None:
        """A Model was listed, appeared or changed (its own status writes included)."""
        meta, status = model["metadata"], model.get("status") or {}
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            with self._guard:
                self._phases.pop(key, None)
                self._retries.discard(key)
                self._autoscaled.pop(key, None)
                self._autoscalers.pop(key, None)
            self.ctx.locks.forget(*key)
            return
        self._remember(key, status.get("phase"))
        with self._guard:
            waiting = [k for k, base in self._trainings.items() if k[0] == key[0] and base == key[1]]
            if (model.get("spec") or {}).get("autoscaling"):
                self._autoscaled[key] = model
            else:  # the replicas are the user's again; a later spec.autoscaling starts afresh
                self._autoscaled.pop(key, None)
                self._autoscalers.pop(key, None)
        # A change that leaves the generation as handled is the operator's own status
        # write: reconciling again would only re-read. Listings and new Models always go.
        handled = meta.get("generation") is not None and meta.get("generation") == status.get("observedGeneration")
        for training in waiting:  # a FineTune may be waiting for this base to download
            self._reconcile_training(training)
        if event_type == "MODIFIED" and handled and not meta.get("deletionTimestamp"):
            return
        self._reconcile(key)

    def handle_child_event(self, event_type: str | None, child: dict[str, Any]) -> None:
        """A Job, Deployment or Service of a Model (or a FineTune's Job) changed or went away:
        reconcile its owner."""
        # Its appearance is the operator's own doing (or, at start, the Model's listing
        # covers it): only changes and deletions carry news.
        if event_type not in ("MODIFIED", "DELETED"):
            return
        owner = owner_of(child)
        if owner is not None:
            self._reconcile(owner)
        trainer_owner = owner_of(child, names.FINETUNE_KIND)
        if trainer_owner is not None:
            self._reconcile_training(trainer_owner)

    def handle_finetune_event(self, event_type: str | None, finetune: dict[str, Any]) -> None:
        """A FineTune was listed, appeared, changed or went away."""
        meta = finetune["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            with self._guard:
                self._trainings.pop(key, None)
            self.ctx.training_locks.forget(*key)
            return
        status = finetune.get("status") or {}
        if event_type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation") \
                and status.get("phase"):
            return  # the operator's own status write (the spec is immutable)
        self._reconcile_training(key)

    async def run(self) -> None:
        """Forever: progress every progress_interval, retries, and a full resync every resync_interval."""
        settings = self.ctx.settings
        last_resync = time.monotonic()
        while True:
            await asyncio.sleep(settings.progress_interval)
            with self._guard:
                downloading = [key for key, phase in self._phases.items() if phase in DOWNLOADING]
                trainings = list(self._trainings)
                again = set(self._retries)
                self._retries.clear()
                if time.monotonic() - last_resync >= settings.resync_interval:
                    again |= set(self._phases)
                    last_resync = time.monotonic()
            await _each(self._progress, downloading)
            await _each(self._reconcile_training, trainings)
            await _each(self._reconcile, again)

    async def autoscale(self) -> None:
        """Forever: every autoscale_interval, one autoscaler tick for each Model with spec.autoscaling."""
        settings = self.ctx.settings
        while True:
            await asyncio.sleep(settings.autoscale_interval)
            with self._guard:
                keys = list(self._autoscaled)
            await _each(self._autoscale, keys)

    def _autoscale(self, key: Key) -> None:
        with self._guard:
            model = self._autoscaled.get(key)
            if model is None:
                return
            autoscaler = self._autoscalers.setdefault(key, Autoscaler(window=self.ctx.settings.autoscale_window))
        try:
            autoscale_model(self.ctx, autoscaler, model, time.monotonic())
        except Exception:  # an API or network hiccup: the next tick tries again
            logger.exception("Autoscaling Model %s/%s failed", *key)

    def _remember(self, key: Key, phase: str | None) -> None:
        with self._guard:
            self._phases[key] = phase

    def _reconcile(self, key: Key) -> None:
        try:
            phase = reconcile_model(self.ctx, *key)
        except Exception:  # an API hiccup: the poller tries again on its next round
            logger.exception("Reconciling Model %s/%s failed; retrying soon", *key)
            with self._guard:
                self._retries.add(key)
            return
        if phase is not None:
            self._remember(key, phase)

    def _reconcile_training(self, key: Key) -> None:
        try:
            found = reconcile_finetune(self.ctx, *key)
        except Exception:  # an API hiccup: the next progress round tries again
            logger.exception("Reconciling FineTune %s/%s failed; retrying soon", *key)
            with self._guard:
                self._trainings.setdefault(key, "")
            return
        with self._guard:
            if found is None or found[0] in FINISHED:
                self._trainings.pop(key, None)
            else:
                self._trainings[key] = found[1]

    def _progress(self, key: Key) -> None:
        try:
            update_progress(self.ctx, *key)
        except Exception:
            logger.exception("Reading the download progress of %s/%s failed", *key)


async def _each(function: Callable[[Key], None], keys: Iterable[Key]) -> None:
    """Run a blocking function for each key in threads, a few at a time."""
    semaphore = asyncio.Semaphore(_PARALLEL)

    async def one(key: Key) -> None:
        async with semaphore:
            await asyncio.to_thread(function, key)

    await asyncio.gather(*(one(key) for key in keys))
