"""A job's lesions, biomarkers and tables through the real API and worker."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage

from api.services.exports import LESION_COLUMNS, RESULT_COLUMNS
from tests.conftest import CONTROL_IMGS, WorkerProcess, patient_files
from tests.integration.conftest import wait_for_job

pytestmark = pytest.mark.integration


def test_three_study_job_gives_lesions_biomarkers_and_tables_that_agree(
    live_client: TestClient, worker: WorkerProcess
) -> None:
    paths = [img for img, _ in patient_files(2)] + sorted(CONTROL_IMGS.glob("control_*.png"))[:1]
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    response = live_client.post("/v1/jobs", files=files, data={"spacing_mm": "2,4"})
    assert response.status_code == 202, response.text
    job = wait_for_job(live_client, response.json()["id"], worker)
    assert job["status"] == "succeeded", job["counts"]

    results = pd.read_csv(io.StringIO(live_client.get(f"/v1/jobs/{job['id']}/results.csv").text))
    lesions = pd.read_csv(io.StringIO(live_client.get(f"/v1/jobs/{job['id']}/lesions.csv").text))
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert results["filename"].tolist() == [p.name for p in paths]
    assert (results["spacing_row_mm"] == 2.0).all()
    assert (results["spacing_col_mm"] == 4.0).all()

    for listed in job["studies"]:
        study = live_client.get(f"/v1/studies/{listed['id']}").json()
        assert study["biomarkers"] == listed["biomarkers"]  # the job page shows the same
        mask = np.asarray(Image.open(io.BytesIO(live_client.get(study["mask_url"]).content)))
        labels, n = ndimage.label(mask == 255, structure=np.ones((3, 3)))
        areas = sorted(np.bincount(labels.ravel())[1:].tolist(), reverse=True)
        found = study["lesions"]
        assert [le["area_px"] for le in found] == areas  # by hand from the served mask
        assert [le["number"] for le in found] == list(range(1, n + 1))
        assert [le["area_mm2"] for le in found] == pytest.approx([a * 8.0 for a in areas])
        for le in found:
            r0, c0, r1, c1 = le["bbox"]
            inside = labels[r0:r1, c0:c1]
            assert inside.any()
            assert r0 <= le["centroid_row"] < r1
            assert c0 <= le["centroid_col"] < c1
        markers = study["biomarkers"]
        assert markers["lesion_count"] == n == study["metrics"]["lesions"]
        assert markers["tumor_area_px"] == int((mask == 255).sum())
        assert markers["tumor_area_cm2"] == pytest.approx(markers["tumor_area_px"] * 0.08)
        centres = np.array([[le["centroid_row"], le["centroid_col"]] for le in found])
        centres_mm = centres.reshape(-1, 2) * np.array([2.0, 4.0])
        sdmax_mm = max(
            (float(np.hypot(*(a - b))) for a in centres_mm for b in centres_mm), default=0.0
        )
        assert markers["sdmax_cm"] == pytest.approx(sdmax_mm / 10)
        assert markers["body_height_cm"] == pytest.approx(markers["body_height_px"] * 0.2)

        row = results[results["study_id"] == study["id"]].iloc[0]
        assert row["tumor_pixels"] == markers["tumor_area_px"]
        assert row["lesions"] == n
        assert row["sdmax_cm"] == pytest.approx(markers["sdmax_cm"])
        assert row["model_version"] == study["metrics"]["model_version"]
        mine = lesions[lesions["study_id"] == study["id"]].sort_values("number")
        assert mine["area_px"].tolist() == areas
        assert mine["peak_probability"].tolist() == pytest.approx(
            [le["peak_probability"] for le in found]
        )
    assert results["lesions"].sum() == len(lesions) > 0
