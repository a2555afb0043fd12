"""Integration fixtures: the API (TestClient) in front of a real worker subprocess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.conftest import WorkerProcess, bearer, create_api_key

FINISHED = {"succeeded", "partially_failed", "failed", "cancelled"}


@pytest.fixture(scope="session")
def live_client(settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    """The API on the worker's database and queues, with a client key in every request."""
    key = create_api_key(settings.sqlalchemy_url, "integration-tests")
    with TestClient(create_app(settings), headers=bearer(key)) as client:
        yield client


def wait_for_job(
    client: TestClient, job_id: int, worker: WorkerProcess, timeout: float = 240
) -> Any:
    """Poll the job until it finishes; fail with the worker log on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stuck at {job['counts']}:\n{worker.log.read_text()[-4000:]}")
        time.sleep(0.3)
