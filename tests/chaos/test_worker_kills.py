"""SIGKILL workers in mid-chunk, ten times in a 100-study job: every study done exactly once."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Result, Study, StudyStatus
from db.session import session_scope
from tests.chaos.conftest import Fleet, Worker, create_key, study_files, wait_finished
from worker.reaper import reap

pytestmark = pytest.mark.chaos

STUDIES = 100
KILLS = 10


def _running(settings: Settings, ids: list[int]) -> bool:
    """All of ``ids`` are running in their first delivery (a chunk in flight, not a redo)."""
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(select(Study.status, Study.attempts).where(Study.id.in_(ids)))
        return all(s is StudyStatus.RUNNING and a == 1 for s, a in rows)


def test_ten_sigkilled_workers_lose_no_study_and_duplicate_no_result(
    chaos_settings: Settings, fleet: Fleet, reaper_dispatcher: Dispatcher
) -> None:
    settings = chaos_settings
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        response = client.post("/v1/jobs", files=study_files(STUDIES))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    live: list[Worker] = [fleet.start(), fleet.start()]
    killed_chunks: list[list[int]] = []
    deadline = time.monotonic() + 150
    next_reap = 0.0
    while len(killed_chunks) < KILLS:
        assert time.monotonic() < deadline, f"only {len(killed_chunks)} kills\n{fleet.logs()}"
        for worker in list(live):
            claims = [c for c in worker.new_claims() if c]
            if claims and _running(settings, claims[-1]):
                worker.kill()  # in mid-chunk: its studies are claimed and running
                killed_chunks.append(claims[-1])
                live.remove(worker)
                live.append(fleet.start())  # a new worker each time
        if time.monotonic() > next_reap:
            reap(settings, reaper_dispatcher)  # what the beat-run reaper task does
            next_reap = time.monotonic() + 2
        time.sleep(0.03)

    final = wait_finished(settings, job_id, fleet, reaper_dispatcher, timeout=150)

    assert len(killed_chunks) == KILLS
    assert len(final) == STUDIES
    assert set(final.values()) == {StudyStatus.SUCCEEDED}
    with session_scope(settings.sqlalchemy_url) as session:
        ids = list(final)
        results = session.execute(
            select(Result.study_id, func.count())
            .where(Result.study_id.in_(ids))
            .group_by(Result.study_id)
        ).all()
        attempts = dict(
            session.execute(select(Study.id, Study.attempts).where(Study.id.in_(ids))).all()
        )
        versions = set(
            session.scalars(select(Result.model_version).where(Result.study_id.in_(ids)))
        )
    assert len(results) == STUDIES
    assert all(n == 1 for _, n in results)
    assert len(versions) == 1
    for chunk in killed_chunks:  # every killed chunk came back and was done again
        assert all(attempts[i] >= 2 for i in chunk), (chunk, [attempts[i] for i in chunk])
    assert max(attempts.values()) <= settings.max_deliveries
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["counts"]["succeeded"] == STUDIES
    assert job["progress"] == 1.0
    assert job["total"] == STUDIES
