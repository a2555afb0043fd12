"""A worker process killed mid-task: the chunk is redelivered and nothing is duplicated."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from config.settings import Settings
from db.models import Result, Study
from db.session import session_scope
from tests.conftest import WorkerProcess, patient_files
from tests.integration.conftest import wait_for_job

pytestmark = pytest.mark.integration


def test_killed_worker_child_loses_no_study_and_duplicates_no_result(
    live_client: TestClient, worker: WorkerProcess, settings: Settings
) -> None:
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p, _ in patient_files(12)]
    job_id = live_client.post("/v1/jobs", files=files).json()["id"]

    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline:
        job = live_client.get(f"/v1/jobs/{job_id}").json()
        if job["counts"]["running"]:
            children = psutil.Process(worker.pid).children(recursive=True)
            assert children, "the worker has no pool process"
            killed = children[0].pid
            os.kill(killed, signal.SIGKILL)  # like an OOM kill in the middle of a chunk
            psutil.Process(killed).wait(timeout=10) if psutil.pid_exists(killed) else None
        else:
            time.sleep(0.02)
    assert killed is not None, "never saw a running study"
    after_kill = live_client.get(f"/v1/jobs/{job_id}").json()
    orphaned = {s["id"] for s in after_kill["studies"] if s["status"] == "running"}
    assert orphaned, "the killed process held no study"  # its chunk must come back

    job = wait_for_job(live_client, job_id, worker)
    assert job["status"] == "succeeded", job["counts"]
    assert job["counts"]["succeeded"] == 12
    with session_scope(settings.sqlalchemy_url) as session:
        ids = [s["id"] for s in job["studies"]]
        results = session.scalar(
            select(func.count()).select_from(Result).where(Result.study_id.in_(ids))
        )
        rows = session.execute(select(Study.id, Study.attempts).where(Study.id.in_(ids)))
        attempts = dict(rows.all())
    assert results == 12  # one row per study even though a chunk ran twice
    assert all(attempts[i] == 2 for i in orphaned)  # redelivered once, then done
    assert all(1 <= a <= settings.max_deliveries for a in attempts.values())
    assert killed not in [c.pid for c in psutil.Process(worker.pid).children(recursive=True)]
