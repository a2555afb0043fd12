"""Studies from a PACS (origin, SUV factor) and the outbox of exports back to it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, undefer

from db.models import PacsExport, PacsExportState, PacsStudy, Result, Study, StudyStatus, utcnow


def add_pacs_study(session: Session, study_id: int, **values: Any) -> PacsStudy:
    """Record where ``study_id`` came from; ``values`` are :class:`PacsStudy` columns."""
    row = PacsStudy(study_id=study_id, **values)
    session.add(row)
    return row


def pacs_study(session: Session, study_id: int, with_mip: bool = False) -> PacsStudy | None:
    """The study's PACS origin, or None for a study that did not come from a PACS."""
    stmt = select(PacsStudy).where(PacsStudy.study_id == study_id)
    if with_mip:
        stmt = stmt.options(undefer(PacsStudy.quant_mip))
    return session.scalars(stmt).first()


def copy_pacs_study(session: Session, from_study_id: int, to_study_id: int) -> PacsStudy | None:
    """Give ``to_study_id`` the PACS origin of ``from_study_id`` (a study re-processed
    with another model from its stored input); None when that one has none."""
    source = pacs_study(session, from_study_id, with_mip=True)
    if source is None:
        return None
    columns = {
        c.key: getattr(source, c.key)
        for c in PacsStudy.__table__.columns
        if c.key not in ("id", "study_id", "created_at")
    }
    return add_pacs_study(session, to_study_id, **columns)


def studies_to_export(
    session: Session, endpoints: Sequence[str], study_ids: Sequence[int] | None = None
) -> list[tuple[int, str, str]]:
    """Succeeded PACS studies of these endpoints whose newest result has no export yet.

    Args:
        session: The unit of work.
        endpoints: Names of the endpoints that take exports.
        study_ids: Only these studies (None: all).

    Returns:
        (study id, model version of the newest result, endpoint), by study id.
    """
    if not endpoints:
        return []
    newest = (
        select(Result.study_id, func.max(Result.id).label("result_id"))
        .group_by(Result.study_id)
        .subquery()
    )
    stmt = (
        select(PacsStudy.study_id, Result.model_version, PacsStudy.endpoint)
        .join(Study, Study.id == PacsStudy.study_id)
        .join(newest, newest.c.study_id == PacsStudy.study_id)
        .join(Result, Result.id == newest.c.result_id)
        .outerjoin(
            PacsExport,
            (PacsExport.study_id == PacsStudy.study_id)
            & (PacsExport.model_version == Result.model_version),
        )
        .where(
            Study.status == StudyStatus.SUCCEEDED,
            PacsStudy.endpoint.in_(list(endpoints)),
            PacsExport.id.is_(None),
        )
        .order_by(PacsStudy.study_id)
    )
    if study_ids is not None:
        stmt = stmt.where(PacsStudy.study_id.in_(list(study_ids)))
    return [(s, v, e) for s, v, e in session.execute(stmt)]


def add_export(
    session: Session,
    study_id: int,
    model_version: str,
    endpoint: str,
    objects: Sequence[dict[str, Any]],
    next_attempt_at: datetime,
) -> int | None:
    """Put one export in the outbox, unless that (study, model version) has one.

    Returns:
        The new row's id; None when another pass added it first.
    """
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert(PacsExport) if on_postgresql else sqlite.insert(PacsExport)
    now = utcnow()
    stmt = (
        insert.values(
            study_id=study_id,
            model_version=model_version,
            endpoint=endpoint,
            state=PacsExportState.PENDING,
            attempts=0,
            next_attempt_at=next_attempt_at,
            objects=list(objects),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["study_id", "model_version"])
        .returning(PacsExport.id)
    )
    return session.execute(stmt).scalar()


def claim_due(
    session: Session,
    now: datetime,
    hold_until: datetime,
    endpoints: Sequence[str],
    only: Sequence[int] | None = None,
    limit: int = 500,
) -> list[int]:
    """Take the exports that are due: each one's next attempt moves to ``hold_until``
    in the same statement that checks it is still due, so two passes never both take
    one, and one whose task is lost comes due again then.

    Args:
        session: The unit of work.
        now: The current time.
        hold_until: The taken rows' next attempt, should their task be lost.
        endpoints: Take only the rows of these endpoints (those that export).
        only: Take only among these rows (None: any).
        limit: Take at most this many.

    Returns:
        The ids taken.
    """
    due = select(PacsExport.id).where(
        PacsExport.state == PacsExportState.PENDING,
        PacsExport.next_attempt_at <= now,
        PacsExport.endpoint.in_(list(endpoints)),
    )
    if only is not None:
        due = due.where(PacsExport.id.in_(list(only)))
    taken = []
    for export_id in list(session.scalars(due.order_by(PacsExport.id).limit(limit))):
        result = session.execute(
            update(PacsExport)
            .where(
                PacsExport.id == export_id,
                PacsExport.state == PacsExportState.PENDING,
                PacsExport.next_attempt_at <= now,
            )
            .values(next_attempt_at=hold_until)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) == 1:
            taken.append(export_id)
    return taken


def result_of(session: Session, study_id: int, model_version: str) -> Result | None:
    """The study's result of ``model_version``, with its mask."""
    stmt = (
        select(Result)
        .where(Result.study_id == study_id, Result.model_version == model_version)
        .options(undefer(Result.mask_png))
    )
    return session.scalars(stmt).first()


def get_export(session: Session, export_id: int) -> PacsExport | None:
    """The outbox row, or None."""
    return session.get(PacsExport, export_id)


def exports_of(session: Session, study_id: int) -> list[PacsExport]:
    """A study's exports, oldest first."""
    stmt = select(PacsExport).where(PacsExport.study_id == study_id).order_by(PacsExport.id)
    return list(session.scalars(stmt))


def mark_stored(session: Session, export: PacsExport, sop_instance_uid: str) -> None:
    """Record that the PACS stored this object of the export."""
    export.objects = [
        {**item, "stored": True} if item["sop_instance_uid"] == sop_instance_uid else item
        for item in export.objects
    ]
    session.flush()


def mark_sent(session: Session, export: PacsExport, now: datetime) -> None:
    """Every object is stored: the export is done."""
    export.state = PacsExportState.SENT
    export.sent_at = now
    export.last_error = None
    session.flush()


def mark_failed(
    session: Session, export: PacsExport, error: str, next_attempt_at: datetime
) -> None:
    """An attempt failed: count it, keep the reason, and set the next one."""
    export.attempts += 1
    export.last_error = error[:2000]
    export.next_attempt_at = next_attempt_at
    session.flush()
