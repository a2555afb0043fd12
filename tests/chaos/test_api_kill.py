"""The API SIGKILLed in mid-upload or mid-request: no half-created job, no stuck job."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select

from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Job, Study, StudyStatus, utcnow
from db.session import session_scope
from tests.chaos.conftest import _free_port, create_key, study_files
from tests.child_processes import tied_to_tests
from tests.conftest import REPO_ROOT, settings_env
from worker.reaper import reap

pytestmark = pytest.mark.chaos


class ApiProcess:
    """``tumorseg api`` as a subprocess that the test kills and starts again."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until /healthz answers."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                tied_to_tests([sys.executable, "-m", "cli", "api", "--port", str(self.port)]),
                cwd=REPO_ROOT,
                env=settings_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the API's process group."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def api(chaos_settings: Settings, tmp_path: Path) -> Iterator[ApiProcess]:
    process = ApiProcess(chaos_settings, tmp_path / "api.log")
    process.start()
    yield process
    process.kill()


def _multipart(n: int, headers: dict[str, str], port: int) -> tuple[bytes, bytes]:
    """Request head and body of a POST /v1/jobs with ``n`` studies."""
    request = httpx.Request(
        "POST", f"http://127.0.0.1:{port}/v1/jobs", files=study_files(n), headers=headers
    )
    body = request.read()
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    for name, value in request.headers.items():
        head += f"{name}: {value}\r\n"
    return (head + "\r\n").encode(), body


def _jobs(settings: Settings) -> list[int]:
    with session_scope(settings.sqlalchemy_url) as session:
        return list(session.scalars(select(Job.id)))


def _queued_in_redis(settings: Settings) -> set[int]:
    client = redis.Redis.from_url(settings.redis_url or "")
    ids: set[int] = set()
    for raw in client.lrange(settings.interactive_queue, 0, -1):
        ids.update(json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0])
    client.close()
    return ids


def test_api_killed_in_mid_upload_leaves_no_job(chaos_settings: Settings, api: ApiProcess) -> None:
    headers = create_key(chaos_settings)
    before = _jobs(chaos_settings)
    head, body = _multipart(12, headers, api.port)
    with socket.create_connection(("127.0.0.1", api.port)) as sock:
        sock.sendall(head + body[: len(body) * 2 // 3])  # two thirds of the files sent
        time.sleep(0.5)  # the API is waiting for the rest
        api.kill()
    assert _jobs(chaos_settings) == before  # nothing committed, nothing half-made

    api.start()
    url = f"http://127.0.0.1:{api.port}"
    listed = httpx.get(f"{url}/v1/jobs", headers=headers, params={"limit": 200}).json()
    assert listed["total"] == len(before)


def test_api_killed_around_the_commit_leaves_no_job_stuck(
    chaos_settings: Settings, api: ApiProcess, reaper_dispatcher: Dispatcher
) -> None:
    settings = chaos_settings
    redis.Redis.from_url(settings.redis_url or "").delete(settings.interactive_queue)
    headers = create_key(settings)
    before = set(_jobs(settings))
    for delay in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8):
        head, body = _multipart(6, headers, api.port)
        with socket.create_connection(("127.0.0.1", api.port)) as sock:
            sock.sendall(head + body)
            time.sleep(delay)
            api.kill()
        api.start()
    created = sorted(set(_jobs(settings)) - before)

    # A job is either absent, or its queued studies are in Redis, or (the API died between
    # its commit and the enqueue) the reaper sends them once the job has been idle and the
    # queue has run dry (here: taken off it, as a worker would take them).
    in_redis = _queued_in_redis(settings)
    redis.Redis.from_url(settings.redis_url or "").delete(settings.interactive_queue)
    idle = settings.model_copy(update={"reap_queued_after": 60})
    reap(idle, reaper_dispatcher, now=utcnow() + timedelta(seconds=61))
    in_redis |= _queued_in_redis(settings)
    with session_scope(settings.sqlalchemy_url) as session:
        for job_id in created:
            rows = session.execute(select(Study.id, Study.status).where(Study.job_id == job_id))
            studies = dict(rows.all())
            assert len(studies) == 6, f"job {job_id} half-created: {len(studies)} studies"
            queued = {i for i, s in studies.items() if s is StudyStatus.QUEUED}
            assert queued <= in_redis, f"job {job_id} stuck: {sorted(queued - in_redis)}"
        total = session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(created)))
    assert total == len(created)
