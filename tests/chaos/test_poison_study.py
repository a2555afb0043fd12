"""A study that kills every worker process that takes it fails alone: its chunk-mates are
done, not failed with it."""

from __future__ import annotations

import io
import os
import signal
import time

import psutil
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from api.app import create_app
from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Study, StudyStatus
from db.session import session_scope
from tests.chaos.conftest import Fleet, create_key, study_files, wait_finished

pytestmark = pytest.mark.chaos


def _large_study(png: bytes) -> bytes:
    """A real study scaled up to 8 Mpx, the largest the settings accept: a second or so
    of network on 2 cores, time for the test to kill the process that holds it."""
    image = Image.open(io.BytesIO(png)).convert("L")
    big = image.resize((2000, 4000), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    big.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_a_study_that_kills_its_worker_fails_alone_and_its_chunk_is_done(
    chaos_settings: Settings, fleet: Fleet, reaper_dispatcher: Dispatcher
) -> None:
    settings = chaos_settings
    files = study_files(8)  # two chunks of 4
    name, png, mime = files[1][1]
    files[1] = ("files", (name, _large_study(png), mime))
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with session_scope(settings.sqlalchemy_url) as session:
        ids = list(
            session.scalars(select(Study.id).where(Study.job_id == job_id).order_by(Study.position))
        )
    poison = ids[1]
    mates: list[int] = []  # the studies claimed with the poison study the first time

    # Like an OOM kill of whichever pool process holds the poison study, every time.
    worker = fleet.start()
    kills, deadline = 0, time.monotonic() + 150
    while kills < settings.max_deliveries:
        assert time.monotonic() < deadline, f"{kills} kills\n{fleet.logs()}"
        claimed = next((claim for claim in worker.new_claims() if poison in claim), None)
        if claimed is not None:
            mates = mates or [i for i in claimed if i != poison]
            with session_scope(settings.sqlalchemy_url) as session:
                study = session.get(Study, poison)
                assert study is not None
                assert study.status is StudyStatus.RUNNING, (
                    "the poison study finished before the kill: make it larger"
                )
            for child in psutil.Process(worker.proc.pid).children(recursive=True):
                os.kill(child.pid, signal.SIGKILL)
            kills += 1
        time.sleep(0.02)

    final = wait_finished(settings, job_id, fleet, reaper_dispatcher, timeout=120)
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(
            select(Study.id, Study.status, Study.attempts, Study.error).where(
                Study.job_id == job_id
            )
        ).all()
    by_id = {i: (status, attempts, error) for i, status, attempts, error in rows}
    assert final[poison] is StudyStatus.FAILED
    assert f"gave up after {settings.max_deliveries} deliveries" in (by_id[poison][2] or "")
    assert all(final[i] is StudyStatus.SUCCEEDED for i in ids if i != poison), by_id
    # the chunk-mates were claimed with the poison study once, then one at a time (the
    # poison study is the tallest, so it is sent last, in a chunk with the next tallest)
    assert mates, "the poison study was claimed alone: the test needs it in a chunk"
    assert all(by_id[i][1] == 2 for i in mates), {i: by_id[i][1] for i in mates}
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "partially_failed", job["counts"]
    assert job["counts"]["succeeded"] == 7
    assert job["counts"]["failed"] == 1
