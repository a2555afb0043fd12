"""Shared fixtures: real databases (SQLite file and PostgreSQL), real Redis, real workers.

Environment (tests only):
    TUMORSEG_TEST_REDIS_URL: Redis for tests, default redis://127.0.0.1:6379/13. The
        PostgreSQL run uses the next db number; only those dbs are flushed.
    TUMORSEG_TEST_PG_URL: server to create throw-away databases on, default
        postgresql+psycopg://postgres@127.0.0.1:5432/test (falls back to user root).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis
from PIL import Image
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from config.settings import Settings
from db.migrate import upgrade_to_head
from db.models import Study, StudyStatus
from db.session import dispose_engines
from tests.child_processes import tied_to_tests
from tests.temporary_database import temporary_database

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "dmiai2023"
PATIENT_IMGS = DATA_DIR / "patients" / "imgs"
PATIENT_LABELS = DATA_DIR / "patients" / "labels"
CONTROL_IMGS = DATA_DIR / "controls" / "imgs"
SAMPLES = REPO_ROOT / "samples"
SAMPLE_IMGS = SAMPLES / "imgs"
SAMPLE_LABELS = SAMPLES / "labels"


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def patient_files(n: int) -> list[tuple[Path, Path]]:
    """The first ``n`` patients that have both an image and a label: from ``samples/``
    when it holds enough (3), else from the data set."""
    for imgs, labels in ((SAMPLE_IMGS, SAMPLE_LABELS), (PATIENT_IMGS, PATIENT_LABELS)):
        pairs = []
        for img in sorted(imgs.glob("patient_*.png")):
            label = labels / img.name.replace("patient_", "segmentation_")
            if label.exists():
                pairs.append((img, label))
            if len(pairs) == n:
                return pairs
    raise AssertionError(f"need {n} labelled patients under {DATA_DIR}")


def create_api_key(
    db_url: str, name: str = "tests", tenant: str = "default", admin: bool = False
) -> str:
    """Create an API key in the database at ``db_url`` and return the plain key."""
    from api.services.auth import create_key
    from db.session import session_scope

    with session_scope(db_url) as session:
        return create_key(session, name, tenant, admin)[1]


def queued_study_ids(session: Session, job_id: int) -> list[int]:
    """Ids of the job's queued studies in submission order."""
    stmt = select(Study.id).where(Study.job_id == job_id, Study.status == StudyStatus.QUEUED)
    return list(session.scalars(stmt.order_by(Study.position)))


def bearer(key: str) -> dict[str, str]:
    """The ``Authorization`` header of ``key``."""
    return {"Authorization": f"Bearer {key}"}


# -- databases ---------------------------------------------------------------------
def _pg_admin_url() -> str:
    explicit = os.environ.get("TUMORSEG_TEST_PG_URL")
    candidates = [explicit] if explicit else [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://root@127.0.0.1:5432/test",
    ]  # fmt: skip
    errors = []
    for url in candidates:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return url
        except Exception as exc:  # try the next user
            errors.append(f"{url}: {exc}")
        finally:
            engine.dispose()
    pytest.fail("PostgreSQL is not reachable (run .ci/run to start it):\n" + "\n".join(errors))


@contextmanager
def temporary_pg_database(prefix: str) -> Iterator[tuple[str, str, Engine]]:
    """`tests.temporary_database.temporary_database` on the reachable PostgreSQL server."""
    with temporary_database(_pg_admin_url(), prefix) as created:
        yield created


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database of each backend, shared by the tests of a session."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "tumorseg.db"
        url = f"sqlite:///{path}"
        upgrade_to_head(url)
        yield url
        dispose_engines()
        return
    with temporary_pg_database("tumorseg_test") as (url, _, _):
        yield url


# -- redis -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_base_url() -> str:
    """The test Redis URL; fails clearly when Redis is not answering."""
    url = os.environ.get("TUMORSEG_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} is not reachable (run .ci/run to start it): {exc}")
    return url


@pytest.fixture(scope="session")
def redis_url(redis_base_url: str, db_url: str) -> Iterator[str]:
    """A Redis db of its own per database backend, flushed before and after."""
    parts = urlsplit(redis_base_url)
    offset = 0 if db_url.startswith("sqlite") else 1
    url = urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + offset}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def settings(db_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Service settings for one backend, small chunks so jobs span several tasks."""
    return Settings(
        database_url=db_url,
        redis_url=redis_url,
        var_dir=tmp_path_factory.mktemp("var"),
        chunk_size=4,
        batch_size=4,
        device="cpu",
        predict_timeout=90,
        task_time_limit=240,
        visibility_timeout=600,
        archive_roots=str(tmp_path_factory.mktemp("archive")),  # the worker's nightly scan
        # the session's worker must not run recovery passes of its own over the rows
        # that the reaper tests arrange (the chaos tests' workers run theirs)
        worker_reaper=False,
        # the released ensemble's first network (`fast`): the suite starts many workers and
        # runs hundreds of studies on 2 cores; tests/model/test_golden.py and
        # tests/integration/test_demo.py run all the members
        model_members=1,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as TUMORSEG_* variables for a subprocess (nothing else inherited);
    lists (the PACS endpoints) as JSON, their secrets revealed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        text = json.dumps(value, default=_json_value) if isinstance(value, list) else str(value)
        env[f"TUMORSEG_{name.upper()}"] = text
    env["OMP_NUM_THREADS"] = "1"  # two cores: leave one for the API and the tests
    return env


def _json_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)  # paths


# -- worker ------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerProcess:
    """A running ``tumorseg worker`` subprocess."""

    pid: int
    log: Path


@contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[WorkerProcess]:
    """A real ``tumorseg worker`` subprocess on ``settings`` until the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            tied_to_tests([sys.executable, "-m", "cli", "worker", "--concurrency", "1"]),
            cwd=REPO_ROOT,
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while b" ready." not in log_path.read_bytes():
                if proc.poll() is not None:
                    pytest.fail(f"worker exited early:\n{log_path.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"worker not ready in 90s:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
            yield WorkerProcess(proc.pid, log_path)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real ``tumorseg worker`` subprocess for the session's backend."""
    with running_worker(settings, tmp_path_factory.mktemp("worker") / "worker.log") as process:
        yield process
