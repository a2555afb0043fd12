"""A Redis lock (``SET key token NX EX ttl``) so two scans never run at once."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import redis

logger = logging.getLogger(__name__)

#: Key of the archive-scan lock.
SCAN_LOCK_KEY = "tumorseg:archive-scan:lock"

# delete the key only while it still holds our token (never another holder's lock)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


@contextmanager
def redis_lock(redis_url: str, key: str, ttl_seconds: int) -> Iterator[bool]:
    """Try to take ``key`` for at most ``ttl_seconds``; yield whether we hold it.

    The lock expires on its own when the holder dies, and is released on exit only by
    its holder.

    Args:
        redis_url: A redis-py URL (``redis://`` or ``unix://``).
        key: Lock key.
        ttl_seconds: Expiry, seconds; at least as long as the guarded work may run.

    Yields:
        True when this caller holds the lock, False when someone else does.
    """
    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
    token = secrets.token_hex(16)
    try:
        acquired = bool(client.set(key, token, nx=True, ex=ttl_seconds))
        if not acquired:
            logger.info("lock %s is held by another process", key)
        try:
            yield acquired
        finally:
            if acquired:
                client.eval(_RELEASE, 1, key, token)
    finally:
        client.close()
