"""Studies and their results, including the idempotent result upsert."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, undefer

from db.models import (
    BIOMARKER_FIELDS,
    METRIC_FIELDS,
    Job,
    Lesion,
    Result,
    Study,
    StudyStatus,
    utcnow,
)

#: Keys of :func:`study_row`.
STUDY_ROW_FIELDS: tuple[str, ...] = (
    "job_id",
    "study_id",
    "position",
    "filename",
    "label_filename",
    "status",
    "error",
    "model_version",
    "spacing_row_mm",
    "spacing_col_mm",
    "height",
    "width",
    *METRIC_FIELDS,
    *BIOMARKER_FIELDS,
    "inference_seconds",
)


def study_row(study: Study, result: Result | None) -> dict[str, Any]:
    """One study with its result's values as a flat row (None where there is no result):
    the rows of a job's ``results.csv`` and of the nightly report."""
    row: dict[str, Any] = {
        "job_id": study.job_id,
        "study_id": study.id,
        "position": study.position,
        "filename": study.filename,
        "label_filename": study.label_filename,
        "status": study.status.value,
        "error": study.error,
        "spacing_row_mm": study.spacing_row_mm,
        "spacing_col_mm": study.spacing_col_mm,
    }
    for name in STUDY_ROW_FIELDS:
        if name not in row:
            row[name] = getattr(result, name) if result is not None else None
    return row


def get_study(session: Session, study_id: int) -> Study | None:
    """Return the study or None."""
    return session.get(Study, study_id)


def load_studies(
    session: Session, study_ids: Sequence[int], with_bytes: bool = False
) -> list[Study]:
    """Return the studies with these ids in submission order (missing ids are skipped)."""
    stmt = select(Study).where(Study.id.in_(list(study_ids))).order_by(Study.job_id, Study.position)
    if with_bytes:
        stmt = stmt.options(undefer(Study.input_png), undefer(Study.label_png))
    return list(session.scalars(stmt))


def latest_result(session: Session, study_id: int, with_bytes: bool = False) -> Result | None:
    """The study's newest result (any model version) or None."""
    stmt = select(Result).where(Result.study_id == study_id).order_by(Result.id.desc()).limit(1)
    if with_bytes:
        stmt = stmt.options(undefer(Result.mask_png))
    return session.scalars(stmt).first()


def latest_results(session: Session, study_ids: Sequence[int]) -> dict[int, Result]:
    """The newest result of each study that has one (no image bytes)."""
    if not study_ids:
        return {}
    rows = session.scalars(
        select(Result).where(Result.study_id.in_(list(study_ids))).order_by(Result.id)
    )
    return {r.study_id: r for r in rows}


def studies_with_result(session: Session, study_ids: Sequence[int], model_version: str) -> set[int]:
    """Ids among ``study_ids`` that already have a result of ``model_version``."""
    if not study_ids:
        return set()
    stmt = select(Result.study_id).where(
        Result.study_id.in_(list(study_ids)), Result.model_version == model_version
    )
    return set(session.scalars(stmt))


def store_results(
    session: Session,
    results: Sequence[Mapping[str, Any]],
    lesions: Sequence[Mapping[str, Any]],
) -> None:
    """Store results with their lesion rows: each result replaces the one of the same
    (study, model version), and its lesions replace that result's earlier rows (a
    redelivered study never doubles them).

    Args:
        session: The unit of work.
        results: Column values of :class:`db.models.Result`.
        lesions: Column values of :class:`db.models.Lesion`, each of one of the results.
    """
    upsert_results(session, results)
    replace_lesions(session, [(r["study_id"], r["model_version"]) for r in results], lesions)


def upsert_results(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert the results, or update the existing rows of the same (study, model version),
    in one statement per set of columns: a worker stores a chunk's results at once
    (`bench/store.py`: 4 to 5 times cheaper than row by row, on SQLite and PostgreSQL).

    Args:
        session: The unit of work.
        rows: Column values of :class:`db.models.Result`, each with ``study_id`` and
            ``model_version``.
    """
    now = utcnow()
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for values in rows:
        row = {"created_at": now, **values}
        by_columns.setdefault(tuple(sorted(row)), []).append(row)
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    for columns, group in by_columns.items():
        insert = postgresql.insert(Result) if on_postgresql else sqlite.insert(Result)
        changed = {k: insert.excluded[k] for k in columns if k not in ("study_id", "model_version")}
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["study_id", "model_version"], set_=changed
            ),
            group,
        )
    session.flush()


def replace_lesions(
    session: Session, results: Sequence[tuple[int, str]], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Make ``rows`` the lesions of these (study id, model version) results: the rows an
    earlier delivery stored for them go, so a redelivered study never doubles its lesions.

    Args:
        session: The unit of work.
        results: (study id, model version) of every result being stored.
        rows: Column values of :class:`db.models.Lesion`, each of one of those results.
    """
    if results:
        session.execute(
            delete(Lesion).where(tuple_(Lesion.study_id, Lesion.model_version).in_(list(results)))
        )
    if rows:
        session.execute(insert(Lesion), list(rows))
    session.flush()


def lesions_of(session: Session, study_id: int, model_version: str) -> list[Lesion]:
    """The lesions of one study's result of ``model_version``, largest first."""
    stmt = (
        select(Lesion)
        .where(Lesion.study_id == study_id, Lesion.model_version == model_version)
        .order_by(Lesion.number)
    )
    return list(session.scalars(stmt))


def job_lesions(session: Session, job_id: int) -> list[Lesion]:
    """The lesions of the newest result of every study of a job, in study order."""
    newest = latest_results(
        session, list(session.scalars(select(Study.id).where(Study.job_id == job_id)))
    )
    stmt = (
        select(Lesion)
        .join(Study, Study.id == Lesion.study_id)
        .where(Study.job_id == job_id)
        .order_by(Study.position, Lesion.model_version, Lesion.number)
    )
    return [
        le
        for le in session.scalars(stmt)
        if le.study_id in newest and newest[le.study_id].model_version == le.model_version
    ]


def idle_queued(session: Session, idle_since: datetime, limit: int = 10_000) -> list[int]:
    """Ids of queued studies whose job has seen no activity since ``idle_since``.

    A job's ``updated_at`` moves whenever a worker claims or stores one of its chunks (or
    the reaper re-sends it), so these are studies whose task message was probably lost.
    """
    stmt = (
        select(Study.id)
        .join(Job, Job.id == Study.job_id)
        .where(Study.status == StudyStatus.QUEUED, Job.updated_at < idle_since)
        .order_by(Study.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def queued_among(session: Session, study_ids: Sequence[int]) -> list[tuple[int, int, str]]:
    """(study id, job id, job queue) of the studies among ``study_ids`` that are queued."""
    if not study_ids:
        return []
    stmt = (
        select(Study.id, Study.job_id, Job.queue)
        .join(Job, Job.id == Study.job_id)
        .where(Study.id.in_(list(study_ids)), Study.status == StudyStatus.QUEUED)
        .order_by(Study.job_id, Study.position)
    )
    return [(int(a), int(b), str(c)) for a, b, c in session.execute(stmt)]


def job_ids_of(session: Session, study_ids: Sequence[int]) -> list[int]:
    """Sorted ids of the jobs the studies belong to."""
    if not study_ids:
        return []
    stmt = select(Study.job_id).where(Study.id.in_(list(study_ids))).distinct()
    return sorted(session.scalars(stmt))
