"""A running worker switches to a newly promoted model version without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from config.settings import Settings
from db.repositories import model_versions
from db.session import session_scope
from model.artifact import save_artifact
from model.manifest import Manifest
from model.network import build_network
from tests.conftest import WorkerProcess, patient_files
from tests.integration.conftest import wait_for_job
from tests.model.conftest import TINY_ARCH


def _submit_one(client: TestClient, worker: WorkerProcess) -> dict:
    img, _ = patient_files(1)[0]
    response = client.post("/v1/jobs", files=[("files", (img.name, img.read_bytes(), "image/png"))])
    assert response.status_code == 202, response.text
    return wait_for_job(client, response.json()["id"], worker)


def test_worker_picks_up_a_promoted_version_without_restart(
    live_client: TestClient, worker: WorkerProcess, settings: Settings, tmp_path: Path
) -> None:
    before = _submit_one(live_client, worker)
    assert before["status"] == "succeeded"
    torch.manual_seed(1)
    artifact = save_artifact(
        build_network(TINY_ARCH),
        Manifest(version="pending", trained=False, architecture=dict(TINY_ARCH)),
        tmp_path,
    )
    new_version = artifact.name
    pid_before = worker.pid
    with session_scope(settings.sqlalchemy_url) as session:
        previous = model_versions.get_promoted(session)
        model_versions.register(session, new_version, str(artifact), {}, trained=False)
        model_versions.promote(session, new_version)
    try:
        after = _submit_one(live_client, worker)
        assert after["status"] == "succeeded"
        assert after["model_version"] == new_version != before["model_version"]
        assert worker.pid == pid_before  # the same worker process, never restarted
        os.kill(worker.pid, 0)  # and still alive
    finally:
        with session_scope(settings.sqlalchemy_url) as session:
            if previous is not None:
                model_versions.promote(session, previous.version)
            else:
                row = model_versions.get_version(session, new_version)
                assert row is not None
                row.promoted = False
