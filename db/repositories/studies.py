"""Studies and their results, including the idempotent result upsert."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, undefer

from db.models import Result, Study, utcnow


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
        stmt = stmt.options(undefer(Result.mask_png), undefer(Result.overlay_png))
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


def upsert_result(session: Session, values: Mapping[str, Any]) -> None:
    """Insert the result, or update the existing row of the same (study, model version).

    Args:
        session: The unit of work.
        values: Column values of :class:`db.models.Result` including ``study_id`` and
            ``model_version``.
    """
    row = dict(values)
    row.setdefault("created_at", utcnow())
    dialect = session.get_bind().dialect.name
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert(Result)
    elif dialect == "sqlite":
        insert = sqlite.insert(Result)
    else:  # pragma: no cover - other backends take the portable path
        existing = session.scalars(
            select(Result).where(
                Result.study_id == row["study_id"], Result.model_version == row["model_version"]
            )
        ).first()
        if existing is None:
            session.add(Result(**row))
        else:
            for key, value in row.items():
                setattr(existing, key, value)
        session.flush()
        return
    stmt = insert.values(**row)
    changed = {k: stmt.excluded[k] for k in row if k not in ("study_id", "model_version")}
    session.execute(
        stmt.on_conflict_do_update(index_elements=["study_id", "model_version"], set_=changed)
    )
    session.flush()


def count_results(session: Session, study_id: int) -> int:
    """Number of result rows of a study (all model versions)."""
    return len(list(session.scalars(select(Result.id).where(Result.study_id == study_id))))
