"""Leases on running studies: who holds them and until when, renewal, and which lapsed.

A worker that claims a study records a lease on it: its identity (``node:pid``) and an
expiry a little ahead. A heartbeat renews the lease while the chunk runs, so a study
whose lease lapsed was held by a worker that died (or lost the database for longer than
the lease). Recovery puts such studies back to queued (``db/status.py::requeue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from db.models import Study, StudyStatus


def node_prefix(node: str) -> str:
    """The start of every lease owner of worker node ``node``."""
    return f"{node}:"


def renew(session: Session, study_ids: Sequence[int], owner: str, expires_at: datetime) -> int:
    """Move the expiry of ``owner``'s leases among ``study_ids`` to ``expires_at``.

    Only studies still running under this owner's lease are touched: one the recovery
    took back, or another worker claimed since, stays as it is.

    Returns:
        The number of leases renewed.
    """
    if not study_ids:
        return 0
    result = session.execute(
        update(Study)
        .where(
            Study.id.in_(list(study_ids)),
            Study.status == StudyStatus.RUNNING,
            Study.lease_owner == owner,
        )
        .values(lease_expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # an UPDATE's CursorResult


def lapsed(now: datetime, node: str | None) -> ColumnElement[bool]:
    """Running studies nobody holds any more: the lease lapsed, or it belongs to ``node``
    (a worker node that just started, so whatever it held belongs to its previous life).
    Rows claimed before leases existed were given a lapsed lease (migration 0008)."""
    held_by_nobody: ColumnElement[bool] = Study.lease_expires_at < now
    if node is not None:
        held_by_nobody = or_(
            held_by_nobody, Study.lease_owner.startswith(node_prefix(node), autoescape=True)
        )
    return and_(Study.status == StudyStatus.RUNNING, held_by_nobody)


def recoverable(
    session: Session, now: datetime, node: str | None = None, limit: int = 10_000
) -> dict[int, str | None]:
    """Running studies whose worker is gone (see :func:`lapsed`): id -> the lease
    owner that held them."""
    stmt = (
        select(Study.id, Study.lease_owner).where(lapsed(now, node)).order_by(Study.id).limit(limit)
    )
    return {int(i): owner for i, owner in session.execute(stmt)}
