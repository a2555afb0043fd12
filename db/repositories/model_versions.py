"""Model versions: registration, promotion and lookup of the promoted one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ModelVersion, utcnow


def get_promoted(session: Session) -> ModelVersion | None:
    """The promoted model version, or None (workers then use the configured default)."""
    stmt = (
        select(ModelVersion).where(ModelVersion.promoted.is_(True)).order_by(ModelVersion.id.desc())
    )
    return session.scalars(stmt).first()


def get_version(session: Session, version: str) -> ModelVersion | None:
    """The row of ``version`` or None."""
    return session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()


def list_versions(session: Session) -> list[ModelVersion]:
    """All known versions, oldest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def register(
    session: Session, version: str, path: str, manifest: dict[str, Any], trained: bool
) -> ModelVersion:
    """Record a model artifact (or refresh the row of an already known version).

    Args:
        session: The unit of work.
        version: The artifact's version string (unique).
        path: Where workers load it from.
        manifest: The artifact's JSON manifest.
        trained: False for placeholder artifacts.

    Returns:
        The row.
    """
    row = get_version(session, version)
    if row is None:
        row = ModelVersion(
            version=version,
            path=path,
            manifest=manifest,
            trained=trained,
            promoted=False,
            created_at=utcnow(),
        )
        session.add(row)
    else:
        row.path, row.manifest, row.trained = path, manifest, trained
    session.flush()
    return row


def promote(session: Session, version: str) -> ModelVersion:
    """Make ``version`` the one promoted version; workers switch at their next task.

    Raises:
        LookupError: The version is not registered.
    """
    row = get_version(session, version)
    if row is None:
        raise LookupError(f"model version {version!r} is not registered")
    session.execute(update(ModelVersion).values(promoted=False))
    session.flush()
    session.refresh(row)
    row.promoted = True
    session.flush()
    return row
