"""Whole service: HTTP API → Redis → real ``tumorseg worker`` → database → HTTP API."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import CONTROL_IMGS, WorkerProcess, patient_files, png_bytes
from tests.integration.conftest import wait_for_job

pytestmark = pytest.mark.integration


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_batch_job_of_24_studies_runs_to_completion(
    live_client: TestClient, worker: WorkerProcess
) -> None:
    pairs = patient_files(20)
    controls = sorted(CONTROL_IMGS.glob("control_*.png"))[:2]
    files = [("files", (img.name, img.read_bytes(), "image/png")) for img, _ in pairs]
    files += [("files", (c.name, c.read_bytes(), "image/png")) for c in controls]
    truncated = pairs[0][0].read_bytes()[:4000]
    files.append(("files", ("patient_truncated.png", truncated, "image/png")))
    tiny_label = png_bytes(np.zeros((32, 32), np.uint8))  # valid PNG, wrong size: worker fails it
    files.append(("files", ("mismatch_study.png", pairs[1][0].read_bytes(), "image/png")))
    labels = [("labels", (lab.name, lab.read_bytes(), "image/png")) for _, lab in pairs]
    labels.append(("labels", ("mismatch_study.png", tiny_label, "image/png")))

    response = live_client.post("/v1/jobs", files=files + labels)
    assert response.status_code == 202, response.text
    job = wait_for_job(live_client, response.json()["id"], worker)

    assert job["status"] == "partially_failed", job["counts"]
    assert job["counts"]["succeeded"] == 22
    assert job["counts"]["failed"] == 2
    assert job["progress"] == 1.0
    assert job["timings"]["total_seconds"] > 0
    by_name = {s["filename"]: s for s in job["studies"]}
    assert "truncated" in by_name["patient_truncated.png"]["error"]
    assert "label" in by_name["mismatch_study.png"]["error"]
    assert job["aggregates"]["labelled_studies"] == 20
    assert 0.0 <= job["aggregates"]["mean_dice"] <= 1.0
    assert job["model_version"]
    assert (job["warning"] is not None) == (not job["model_trained"])

    sources = {img.name: img for img, _ in pairs} | {c.name: c for c in controls}
    for name, path in sources.items():
        study = by_name[name]
        assert study["status"] == "succeeded"
        assert study["metrics"]["tumor_pixels"] >= 0
        mask_response = live_client.get(study["mask_url"])
        assert mask_response.headers["content-type"] == "image/png"
        mask = _png(mask_response.content)
        height, width = Image.open(path).size[::-1]
        assert mask.shape == (height, width)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert int((mask == 255).sum()) == study["metrics"]["tumor_pixels"]
        overlay = Image.open(io.BytesIO(live_client.get(study["overlay_url"]).content))
        assert overlay.size == (width, height)
        assert overlay.mode == "RGB"
        if name.startswith("patient_"):
            assert study["metrics"]["dice"] is not None
        else:
            assert study["metrics"]["dice"] is None


def test_predict_endpoint_follows_the_competition_contract(
    live_client: TestClient, worker: WorkerProcess
) -> None:
    img, _label = patient_files(1)[0]
    response = live_client.post(
        "/predict", json={"img": base64.b64encode(img.read_bytes()).decode()}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-trained"] in {"true", "false"}
    mask = Image.open(io.BytesIO(base64.b64decode(response.json()["img"])))
    assert mask.mode == "RGB"
    assert mask.size == Image.open(img).size
    rgb = np.asarray(mask)
    assert set(np.unique(rgb).tolist()) <= {0, 255}
    assert (rgb[..., 0] == rgb[..., 1]).all()
    assert (rgb[..., 1] == rgb[..., 2]).all()


def test_cancelled_job_is_skipped_by_the_worker(
    live_client: TestClient, worker: WorkerProcess
) -> None:
    pairs = patient_files(8)
    files = [("files", (img.name, img.read_bytes(), "image/png")) for img, _ in pairs]
    job_id = live_client.post("/v1/jobs", files=files).json()["id"]
    cancelled = live_client.delete(f"/v1/jobs/{job_id}").json()
    job = wait_for_job(live_client, job_id, worker)
    assert job["status"] in {"cancelled", "succeeded"}
    assert job["counts"]["cancelled"] == cancelled["counts"]["cancelled"]
    assert job["counts"]["queued"] == job["counts"]["running"] == 0
    assert job["counts"]["succeeded"] + job["counts"]["cancelled"] == 8
