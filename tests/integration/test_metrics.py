"""The metrics of the real processes move with a job: the API's ``GET /metrics`` and a
worker node's exporter, read over HTTP while a ``tumorseg api`` and a ``tumorseg worker``
process run on the real Redis.

Everything here is the test's own, so every count is exact: a SQLite database, queues
that no other worker takes, and a worker whose periodic recovery is off (its pass at
start-up still runs). Before the worker starts, the database holds one study whose
worker died (its lease lapsed): the start-up pass recovers it in the worker's main
process, and a pool process segments it, so both kinds of process show in the node's
metrics.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from sqlalchemy import select

from cli.stack import Processes, free_port, wait_ready
from config.settings import Settings
from db.migrate import upgrade_to_head
from db.models import Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import dispose_engines, session_scope
from tests.conftest import (
    SAMPLE_IMGS,
    bearer,
    create_api_key,
    patient_files,
    png_bytes,
    settings_env,
)
from tests.integration.conftest import FINISHED
from tests.prometheus import series, value

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDIES = "tumorseg_worker_studies_total"
CHUNK = "tumorseg_worker_chunk_seconds"
PREDICT = "tumorseg_worker_predict_seconds"
RECOVERED = "tumorseg_worker_leases_recovered_total"
REQUESTS = "tumorseg_api_requests_total"
LATENCY = "tumorseg_api_request_duration_seconds"


@dataclass(frozen=True)
class Stack:
    """The running processes: the API's URL, the worker's exporter, a client key."""

    settings: Settings
    api: str
    exporter: str
    headers: dict[str, str]
    procs: Processes
    recovered_job: int


def _lapsed_lease_job(settings: Settings) -> int:
    """A job of one study left running by a worker that died: its lease lapsed."""
    img, _ = patient_files(1)[0]
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.create_job(
            session, settings.interactive_queue, [jobs_repo.NewStudy(img.name, img.read_bytes())]
        )
        job_id = job.id
        for study in session.scalars(select(Study).where(Study.job_id == job_id)):
            study.status, study.attempts = StudyStatus.RUNNING, 1
            study.started_at = utcnow() - timedelta(minutes=5)
            study.lease_owner = "gone@elsewhere:4242"
            study.lease_expires_at = utcnow() - timedelta(minutes=1)
    return job_id


@pytest.fixture
def stack(redis_base_url: str, tmp_path: Path) -> Iterator[Stack]:
    """``tumorseg worker`` (exporter on) and ``tumorseg api`` on the test's own database
    and queues; both stopped, and the queues deleted, at the end."""
    queue = f"tumorseg.test.metrics.{secrets.token_hex(4)}"
    settings = Settings(  # type: ignore[call-arg]  # the rest are defaults
        database_url=f"sqlite:///{tmp_path / 'metrics.db'}",
        redis_url=redis_base_url,
        var_dir=tmp_path / "var",
        interactive_queue=queue,
        nightly_queue=f"{queue}.nightly",
        chunk_size=2,  # a job of 5 studies: 3 chunk tasks
        batch_size=2,
        device="cpu",
        model_members=1,  # an ensemble's first network: the counts, not the masks, matter
        task_time_limit=240,
        visibility_timeout=600,
        worker_reaper=False,
        worker_metrics_port=free_port(),
    )
    upgrade_to_head(settings.sqlalchemy_url)
    headers = bearer(create_api_key(settings.sqlalchemy_url, "metrics"))
    recovered_job = _lapsed_lease_job(settings)
    api_port = free_port()
    env = settings_env(settings)
    procs = Processes(tmp_path)
    try:
        procs.start(
            "worker",
            [sys.executable, "-m", "cli", "worker", "--hostname", "metrics@%h"],
            env,
        )
        procs.start("api", [sys.executable, "-m", "cli", "api", "--port", str(api_port)], env)
        api = f"http://127.0.0.1:{api_port}"
        wait_ready(api, procs)
        exporter = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
        deadline = time.monotonic() + 120
        while b" ready." not in (tmp_path / "worker.log").read_bytes():
            procs.check_alive()
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
        yield Stack(settings, api, exporter, headers, procs, recovered_job)
    finally:
        procs.stop_all()
        client = redis.Redis.from_url(redis_base_url)
        client.delete(settings.interactive_queue, settings.nightly_queue)
        client.close()
        dispose_engines()


def _wait_job(client: httpx.Client, stack: Stack, job_id: int) -> tuple[Any, int]:
    """Poll the job until it finishes; returns it and the number of polls made."""
    deadline = time.monotonic() + 300
    polls = 0
    while True:
        response = client.get(f"/v1/jobs/{job_id}", params={"studies": "false"})
        polls += 1
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in FINISHED:
            return job, polls
        stack.procs.check_alive()
        if time.monotonic() > deadline:
            log = (stack.procs.log_dir / "worker.log").read_text()[-3000:]
            pytest.fail(f"job {job_id} stuck at {job['counts']}:\n{log}")
        time.sleep(0.5)


def _worker_metrics(stack: Stack, version: str, succeeded: float) -> str:
    """The node's metrics once ``succeeded`` studies of ``version`` are counted there (a
    pool process records its chunk just after committing it)."""
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(stack.exporter, timeout=5).text
        done = value(text, STUDIES, outcome="succeeded", model_version=version)
        if done >= succeeded or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_metrics_of_the_api_and_the_worker_move_with_a_job(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api, headers=stack.headers, timeout=30) as client:
        # the start-up pass recovered the lapsed lease; a pool process then segmented it
        recovered, _ = _wait_job(client, stack, stack.recovered_job)
        assert recovered["status"] == "succeeded"
        version = str(recovered["model_version"])
        before = _worker_metrics(stack, version, succeeded=1)
        assert value(before, RECOVERED) == 1.0
        assert value(before, STUDIES, outcome="succeeded", model_version=version) == 1.0
        assert value(before, f"{CHUNK}_count", model_version=version) == 1.0
        api_before = client.get("/metrics").text

        pairs = patient_files(3)  # with their labels; a control without one
        studies = [img for img, _ in pairs] + [SAMPLE_IMGS / "control_003.png"]
        files = [("files", (img.name, img.read_bytes(), "image/png")) for img in studies]
        files.append(("files", ("mismatch_study.png", pairs[0][0].read_bytes(), "image/png")))
        labels = [("labels", (lab.name, lab.read_bytes(), "image/png")) for _, lab in pairs]
        tiny = png_bytes(np.zeros((32, 32), np.uint8))  # a valid PNG of the wrong size
        labels.append(("labels", ("mismatch_study.png", tiny, "image/png")))
        submitted = client.post("/v1/jobs", files=files + labels)
        assert submitted.status_code == 202, submitted.text
        job, polls = _wait_job(client, stack, submitted.json()["id"])
        assert (job["counts"]["succeeded"], job["counts"]["failed"]) == (4, 1), job["counts"]
        assert job["model_version"] == version

        after = _worker_metrics(stack, version, succeeded=1 + 4)
        api_after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def api_delta(name: str, **labels: str) -> float:
        return value(api_after, name, **labels) - value(api_before, name, **labels)

    # the worker node: studies by outcome and model version, one observation per chunk
    assert delta(STUDIES, outcome="succeeded", model_version=version) == 4
    assert delta(STUDIES, outcome="failed", model_version=version) == 1
    assert delta(f"{CHUNK}_count", model_version=version) == 3  # 5 studies in chunks of 2
    assert delta(f"{CHUNK}_sum", model_version=version) > 0
    assert delta(f"{CHUNK}_bucket", model_version=version, le="+Inf") == 3
    assert delta(f"{PREDICT}_count", model_version=version) == 3
    assert (
        0
        < delta(f"{PREDICT}_sum", model_version=version)
        <= delta(f"{CHUNK}_sum", model_version=version)
    )
    assert value(after, RECOVERED) == 1.0  # nothing lapsed during the job
    assert {dict(labels)["model_version"] for labels in series(after, STUDIES)} == {version}

    # the API: the job's routes by template and status, and their latency
    assert api_delta(REQUESTS, method="POST", route="/v1/jobs", status="202") == 1
    assert api_delta(REQUESTS, method="GET", route="/v1/jobs/{job_id}", status="200") == polls
    assert api_delta(f"{LATENCY}_count", method="POST", route="/v1/jobs") == 1
    assert api_delta(f"{LATENCY}_count", method="GET", route="/v1/jobs/{job_id}") == polls
    assert api_delta(REQUESTS, method="GET", route="/metrics", status="200") == 1
    assert api_delta(REQUESTS, method="GET", route="<unmatched>", status="404") == 0

    # the depth of each queue, a number for each (the job is done: both are empty)
    depths = series(api_after, "tumorseg_queue_depth")
    assert depths == {
        frozenset({("queue", stack.settings.interactive_queue)}): 0.0,
        frozenset({("queue", stack.settings.nightly_queue)}): 0.0,
    }
    assert value(api_after, "tumorseg_broker_up") == 1.0
