"""The worker's own recovery: a reaper pass at start-up, then one every ``reap_interval``.

At start-up (Celery's ``worker_init``, in the main process before the pool takes any
task) the pass also re-queues every running study this node still holds: a node that
was SIGKILLed and started again gets its work back at once, without waiting for the
leases to lapse. Then, unless ``worker_reaper`` is off, a daemon thread of the main
process runs a pass every ``reap_interval`` seconds, so lapsed leases and lost task
messages come back without beat, also while every pool process is busy. Each pass logs
the studies it sends again (``worker/reaper.py``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals

from config.settings import Settings
from core.dispatch import Dispatcher
from worker.reaper import ReapReport, reap

logger = logging.getLogger(__name__)


class RecoveryLoop:
    """Runs a reaper pass every ``reap_interval`` seconds in a daemon thread."""

    def __init__(self, dispatcher: Dispatcher, settings: Settings) -> None:
        self.dispatcher, self.settings = dispatcher, settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a pass in progress ends first)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reap_interval):
            try:
                reap(self.settings, self.dispatcher)
            except Exception as exc:  # database or broker away: the next pass tries again
                logger.warning("recovery pass failed: %s: %s", type(exc).__name__, exc)


def install(app: Celery, settings: Settings) -> None:
    """Run the recovery in the worker that ``app`` starts (see the module's notes)."""
    dispatcher = Dispatcher(settings, app)
    loop = RecoveryLoop(dispatcher, settings)

    def at_init(sender: Any, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        try:
            report: ReapReport = reap(settings, dispatcher, node=sender.hostname)
        except Exception as exc:  # the periodic passes (or beat) will catch up
            logger.warning("recovery at start-up failed: %s: %s", type(exc).__name__, exc)
            return
        logger.info("recovery at start-up of %s: %s", sender.hostname, report.as_dict())

    def at_ready(sender: Any, **_: Any) -> None:
        if getattr(sender, "app", None) is app and settings.worker_reaper:
            loop.start()

    def at_shutdown(sender: Any = None, **_: Any) -> None:
        if loop._thread.is_alive():
            loop.stop()

    signals.worker_init.connect(at_init, weak=False)
    signals.worker_ready.connect(at_ready, weak=False)
    signals.worker_shutdown.connect(at_shutdown, weak=False)
