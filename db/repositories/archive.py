"""Archive entries: which content was submitted for which model version, and the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, undefer

from db.models import (
    UNFINISHED_STUDY,
    ArchiveEntry,
    Job,
    JobSource,
    Result,
    Study,
    utcnow,
)

_IN_CHUNKS = 500  # hashes per IN (...) list


@dataclass(frozen=True)
class Reprocessable:
    """A known archive study whose result came from an older model version."""

    content_hash: str
    kind: str
    root: str
    path: str
    study_id: int


def _chunks(values: Sequence[str]) -> list[list[str]]:
    return [list(values[i : i + _IN_CHUNKS]) for i in range(0, len(values), _IN_CHUNKS)]


def known_hashes(session: Session, hashes: Sequence[str]) -> set[str]:
    """The hashes among ``hashes`` that were ever submitted from the archive."""
    found: set[str] = set()
    for part in _chunks(hashes):
        stmt = select(ArchiveEntry.content_hash).where(ArchiveEntry.content_hash.in_(part))
        found |= set(session.scalars(stmt))
    return found


def hashes_done(session: Session, hashes: Sequence[str], model_version: str) -> set[str]:
    """Hashes that must not be submitted again for ``model_version``.

    That is: submitted for that version already, or with a result of that version, or
    with a study still queued or running (whatever version it will get).
    """
    found: set[str] = set()
    for part in _chunks(hashes):
        stmt = (
            select(ArchiveEntry.content_hash)
            .join(Study, Study.id == ArchiveEntry.study_id)
            .outerjoin(
                Result,
                (Result.study_id == Study.id) & (Result.model_version == model_version),
            )
            .where(
                ArchiveEntry.content_hash.in_(part),
                or_(
                    ArchiveEntry.model_version == model_version,
                    Result.id.is_not(None),
                    Study.status.in_(UNFINISHED_STUDY),
                ),
            )
        )
        found |= set(session.scalars(stmt))
    return found


def reprocessable(session: Session, old_version: str) -> list[Reprocessable]:
    """Archive studies that have a result of ``old_version`` (newest entry per hash)."""
    stmt = (
        select(ArchiveEntry)
        .join(Result, Result.study_id == ArchiveEntry.study_id)
        .where(Result.model_version == old_version)
        .order_by(ArchiveEntry.id)
    )
    latest: dict[str, ArchiveEntry] = {}
    for entry in session.scalars(stmt):
        latest[entry.content_hash] = entry
    return [
        Reprocessable(e.content_hash, e.kind, e.root, e.path, e.study_id) for e in latest.values()
    ]


def study_input(session: Session, study_id: int) -> tuple[bytes, tuple[float, float] | None] | None:
    """The stored input PNG of a study and its pixel spacing (to re-queue it without
    reading the archive); None when the study is gone."""
    stmt = select(Study).where(Study.id == study_id).options(undefer(Study.input_png))
    study = session.scalars(stmt).first()
    if study is None:
        return None
    rows, cols = study.spacing_row_mm, study.spacing_col_mm
    return study.input_png, (rows, cols) if rows is not None and cols is not None else None


def add_entry(
    session: Session,
    study_id: int,
    content_hash: str,
    model_version: str,
    kind: str,
    root: str,
    path: str,
    seen_at: datetime | None = None,
) -> ArchiveEntry:
    """Record that ``study_id`` holds this archive content for ``model_version``.

    ``seen_at`` (default now) should be when the file was found: a later modification
    time means the file changed after it was read.
    """
    entry = ArchiveEntry(
        study_id=study_id,
        content_hash=content_hash,
        model_version=model_version,
        kind=kind,
        root=root,
        path=path,
        created_at=seen_at or utcnow(),
    )
    session.add(entry)
    return entry


def night_rows(
    session: Session, start: datetime, end: datetime
) -> list[tuple[ArchiveEntry, Study, Job]]:
    """Archive studies of archive jobs created in ``[start, end)``, in submission order."""
    stmt = (
        select(ArchiveEntry, Study, Job)
        .join(Study, Study.id == ArchiveEntry.study_id)
        .join(Job, Job.id == Study.job_id)
        .where(Job.source == JobSource.ARCHIVE, Job.created_at >= start, Job.created_at < end)
        .order_by(Job.id, Study.position)
    )
    return [(entry, study, job) for entry, study, job in session.execute(stmt)]


def submitted_paths(session: Session, roots: Sequence[str]) -> dict[tuple[str, str], datetime]:
    """(root, path) of every archive entry under ``roots`` -> when it was last submitted."""
    stmt = (
        select(ArchiveEntry.root, ArchiveEntry.path, func.max(ArchiveEntry.created_at))
        .where(ArchiveEntry.root.in_(list(roots)))
        .group_by(ArchiveEntry.root, ArchiveEntry.path)
    )
    out: dict[tuple[str, str], datetime] = {}
    for root, path, created in session.execute(stmt):
        if created.tzinfo is None:  # SQLite returns aggregates without the type's zone
            created = created.replace(tzinfo=UTC)
        out[(root, path)] = created
    return out
