"""API keys: generation, hashing and authentication of ``Authorization: Bearer`` headers.

A key is ``tsk_`` plus 43 URL-safe characters (256 random bits). The database stores
only its SHA-256 and its first characters (the prefix, to find the row and to show in
listings); the hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from api.services.errors import ServiceError
from db.models import DEFAULT_TENANT, ApiKey, Job
from db.repositories import api_keys as keys_repo

KEY_PREFIX = "tsk_"
PREFIX_LENGTH = 12
_TENANT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    key_id: int
    name: str
    tenant: str
    is_admin: bool

    def can_see(self, job: Job) -> bool:
        """Whether this caller may see ``job``: same tenant, or an admin key."""
        return self.is_admin or (job.tenant or DEFAULT_TENANT) == self.tenant


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key (keys are high-entropy, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(
    session: Session, name: str, tenant: str = DEFAULT_TENANT, is_admin: bool = False
) -> tuple[ApiKey, str]:
    """Create a key; the caller shows the returned plain key once, it is never stored.

    Args:
        session: The unit of work (the caller commits).
        name: Client name.
        tenant: Tenant of the jobs the key submits and sees.
        is_admin: Whether the key sees every tenant's jobs.

    Returns:
        The stored row and the plain key.

    Raises:
        ValueError: An empty name or a tenant with characters outside ``[A-Za-z0-9._-]``.
    """
    if not name.strip():
        raise ValueError("a key needs a name")
    if not tenant or len(tenant) > 64 or not set(tenant) <= _TENANT_CHARS:
        raise ValueError("tenant must be 1-64 characters of A-Z a-z 0-9 . _ -")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = keys_repo.add_key(
        session, name.strip(), tenant, is_admin, hash_key(key), key[:PREFIX_LENGTH]
    )
    return row, key


def _unauthorized(detail: str) -> ServiceError:
    return ServiceError(401, detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(session: Session, key: str | None) -> Principal:
    """Resolve a bearer key to its principal.

    Args:
        session: The request's unit of work (``last_used_at`` is updated in it).
        key: The bearer token, or None when the header is missing.

    Returns:
        The caller.

    Raises:
        ServiceError: 401 when the key is missing, unknown or revoked.
    """
    if not key:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_key(key)
    match = None
    for row in keys_repo.active_keys_with_prefix(session, key[:PREFIX_LENGTH]):
        if hmac.compare_digest(row.key_hash, digest):
            match = row
    if match is None:
        raise _unauthorized("invalid or revoked API key")
    keys_repo.touch(session, match)
    return Principal(match.id, match.name, match.tenant, match.is_admin)
