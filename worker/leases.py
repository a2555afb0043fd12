"""Worker side of study leases: who a worker process is, whether a lease is still held,
and the heartbeat that renews a running chunk's leases.

A claim records ``node:pid`` (the Celery node name and the pool process) and an expiry
``lease_seconds`` ahead; the heartbeat renews it every ``heartbeat_seconds`` while the
chunk runs, so a long chunk keeps its studies and a dead worker's lease lapses within
``lease_seconds``. The recovery pass (``worker/reaper.py``) re-queues lapsed studies.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType

from config.settings import Settings
from db import status
from db.models import Study, utcnow
from db.repositories import leases as leases_repo
from db.repositories import studies as studies_repo
from db.session import session_scope

logger = logging.getLogger(__name__)


def default_node() -> str:
    """The node name of a process outside a Celery worker (tests, the CLI)."""
    return f"tumorseg@{socket.gethostname()}"


def lease_owner(node: str | None = None, pid: int | None = None) -> str:
    """The lease owner of this process: ``node:pid``."""
    return f"{node or default_node()}:{pid or os.getpid()}"


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this machine (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def held_elsewhere(study: Study, owner: str, now: datetime) -> bool:
    """Whether another live worker process holds the lease on this running study.

    A lease of another node counts until it lapses. A lease of this node by a process
    that is gone (a pool process killed by the OOM killer or the hard time limit, whose
    chunk the node then gets again) is lapsed at once.
    """
    holder, expires = study.lease_owner, study.lease_expires_at
    if holder is None or expires is None or expires <= now or holder == owner:
        return False
    node, _, pid = holder.rpartition(":")
    if node == owner.rpartition(":")[0] and pid.isdigit() and _process_gone(int(pid)):
        return False
    logger.info("study %d: held by %s; skipped", study.id, holder)  # a duplicate delivery
    return True


class Heartbeat:
    """Renews ``owner``'s leases on a chunk's studies from a daemon thread.

    It beats at once and then every ``heartbeat_seconds``. Each beat also records
    activity on the chunk's jobs, so that while a delivery is in hand (loading the model,
    say, before its claim) the reaper does not take its queued studies for lost. Each
    beat is its own short unit of work. A failed one (the database is away) is logged
    and tried again at the next; the lease lapses only when beats fail for the whole
    lease. Use as a context manager around the chunk: the thread stops on exit,
    whatever happened.
    """

    def __init__(self, settings: Settings, study_ids: Sequence[int], owner: str) -> None:
        self.db_url = settings.sqlalchemy_url
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.interval = settings.heartbeat_seconds
        self.study_ids, self.owner = list(study_ids), owner
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-heartbeat-{owner}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def renew(self) -> int:
        """Beat once: touch the jobs, renew the leases; the number of leases renewed."""
        with session_scope(self.db_url) as session:
            status.lock_jobs(session, studies_repo.job_ids_of(session, self.study_ids))
            return leases_repo.renew(session, self.study_ids, self.owner, utcnow() + self.lease)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.renew()
            except Exception as exc:  # the database may be away for a moment
                logger.warning("lease heartbeat of %s failed: %s", self.study_ids, exc)
            self._stop.wait(self.interval)
