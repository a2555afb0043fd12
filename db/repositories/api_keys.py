"""API keys: creation, lookup by prefix, revocation, last use."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ApiKey, utcnow

#: ``last_used_at`` is written at most this often per key, so reads stay cheap.
TOUCH_INTERVAL = timedelta(seconds=60)


def add_key(
    session: Session, name: str, tenant: str, is_admin: bool, key_hash: str, prefix: str
) -> ApiKey:
    """Store a new key's hash and flush so its id is assigned.

    Args:
        session: The unit of work.
        name: Human-readable name of the client.
        tenant: Tenant whose jobs the key sees.
        is_admin: Admin keys see the jobs of every tenant.
        key_hash: Hex SHA-256 of the key (the key itself is never stored).
        prefix: The key's first characters, to find candidates and to show in listings.

    Returns:
        The new row.
    """
    row = ApiKey(
        name=name,
        tenant=tenant,
        is_admin=is_admin,
        key_hash=key_hash,
        prefix=prefix,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def active_keys_with_prefix(session: Session, prefix: str) -> list[ApiKey]:
    """Unrevoked keys whose prefix is ``prefix``."""
    stmt = select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def list_keys(session: Session) -> list[ApiKey]:
    """All keys, oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(session: Session, key_id: int) -> ApiKey | None:
    """Revoke the key (idempotent); None when there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def touch(session: Session, row: ApiKey, now: datetime | None = None) -> None:
    """Record that the key was used, at most once per :data:`TOUCH_INTERVAL`."""
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL:
        row.last_used_at = now
        session.flush()
