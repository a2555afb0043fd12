"""POST /predict waits without a thread: the API stays responsive while many calls wait.

The API runs as a real uvicorn process on the real Redis and database, with its
threadpool cut to 4 threads, and no worker takes the test's queue, so each /predict waits
its whole ``predict_timeout``. A /predict that held a thread while it waited (the old
sleep-polling route did) would leave the sync routes, which need the threadpool, waiting
behind it.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from sqlalchemy import func, select

from cli.stack import free_port
from config.settings import Settings
from core.job_notices import finished_channel
from db.models import Job, JobSource
from db.session import session_scope
from tests.child_processes import tied_to_tests
from tests.conftest import REPO_ROOT, SAMPLE_IMGS, bearer, create_api_key, settings_env

logger = logging.getLogger(__name__)

WAITING = 8
THREADS = 4  # fewer than the waiting calls
PREDICT_TIMEOUT = 8.0

#: `tumorseg api`, but with the threadpool cut to THREADS tokens.
SERVE = f"""
import sys, anyio.to_thread, uvicorn
from api.app import create_app

async def main() -> None:
    anyio.to_thread.current_default_thread_limiter().total_tokens = {THREADS}
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=int(sys.argv[1]))
    await uvicorn.Server(config).serve()

anyio.run(main)
"""


@pytest.fixture
def waiting_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API's URL, on a queue of its own that no worker takes."""
    queue = f"tumorseg.test.waits.{secrets.token_hex(4)}"
    own = settings.model_copy(
        update={
            "interactive_queue": queue,
            "nightly_queue": f"{queue}.nightly",
            "predict_timeout": PREDICT_TIMEOUT,
        }
    )
    with httpx.Client() as probe:
        port = free_port()
        log = tmp_path_factory.mktemp("api") / "api.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                tied_to_tests([sys.executable, "-c", SERVE, str(port)]),
                cwd=REPO_ROOT,
                env=settings_env(own),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not _answers(probe, url):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _predict_jobs(settings: Settings, since_id: int) -> list[int]:
    with session_scope(settings.sqlalchemy_url) as session:
        stmt = select(Job.id).where(Job.id > since_id, Job.source == JobSource.PREDICT)
        return list(session.scalars(stmt))


def _waiting(settings: Settings, since_id: int) -> int:
    """How many of the /predict jobs since ``since_id`` have a call subscribed to their end."""
    channels = [finished_channel(job_id) for job_id in _predict_jobs(settings, since_id)]
    if not channels:
        return 0
    assert settings.redis_url is not None
    with redis.Redis.from_url(settings.redis_url) as client:
        counts = client.pubsub_numsub(*channels)
    return sum(1 for _, subscribers in counts if subscribers)


def test_healthz_answers_within_100_ms_while_8_predict_calls_wait(
    settings: Settings, waiting_api: str
) -> None:
    headers = bearer(create_api_key(settings.sqlalchemy_url, "predict-waits"))
    body = {"img": base64.b64encode((SAMPLE_IMGS / "patient_000.png").read_bytes()).decode()}
    with session_scope(settings.sqlalchemy_url) as session:
        last_job = int(session.scalar(select(func.max(Job.id))) or 0)

    def predict() -> tuple[int, float]:
        started = time.monotonic()
        response = httpx.post(f"{waiting_api}/predict", json=body, headers=headers, timeout=60)
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(WAITING) as pool, httpx.Client(base_url=waiting_api) as client:
        calls = [pool.submit(predict) for _ in range(WAITING)]
        deadline = time.monotonic() + PREDICT_TIMEOUT / 2
        while _waiting(settings, last_job) < WAITING:  # every call has subscribed to its notice
            assert time.monotonic() < deadline, f"submitted: {_predict_jobs(settings, last_job)}"
            time.sleep(0.05)
        job_id = _predict_jobs(settings, last_job)[0]
        assert client.get("/healthz").status_code == 200  # the client's connection, made once

        health_ms, job_ms = [], []
        for _ in range(20):
            started = time.perf_counter()
            assert client.get("/healthz").json() == {"status": "ok"}
            health_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()  # a sync route: it needs one of the THREADS
            job = client.get(f"/v1/jobs/{job_id}", params={"studies": "false"}, headers=headers)
            assert job.status_code == 200
            assert job.json()["status"] == "queued"
            job_ms.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
        still_waiting = sum(not c.done() for c in calls)
        outcomes = [c.result() for c in calls]

    logger.info(
        "while %d /predict calls waited: /healthz max %.1f ms (median %.1f), a sync route "
        "max %.1f ms",
        WAITING,
        max(health_ms),
        statistics.median(health_ms),
        max(job_ms),
    )
    assert still_waiting == WAITING  # measured while all of them waited
    assert max(health_ms) < 100, f"/healthz took {max(health_ms):.1f} ms: {health_ms}"
    assert max(job_ms) < 2000, f"a sync route waited for a thread: {job_ms}"
    assert [code for code, _ in outcomes] == [504] * WAITING  # no worker: each timed out
    assert all(PREDICT_TIMEOUT <= seconds < 3 * PREDICT_TIMEOUT for _, seconds in outcomes)
