"""A succeeded study stored as a worker stores it: its result (the mask) and its lesion
rows, for the tests of the pages and routes that show them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from db import status
from db.models import Study, StudyStatus
from db.repositories import studies as studies_repo
from db.session import session_scope
from tests.conftest import SAMPLE_IMGS

#: The study every stored result belongs to.
SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()

HEIGHT, WIDTH = Image.open(io.BytesIO(SAMPLE)).size[::-1]
VERSION = "viewer-test-v1"


def png(arr: np.ndarray) -> bytes:
    """Encode an array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def masks() -> tuple[np.ndarray, np.ndarray]:
    """Two predicted lesions, one overlapping the label (hits and false positives), and a
    label lesion the mask misses."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[100:110, 100:120] = 255  # lesion 1: columns 100-109 false positives, 110-119 hits
    mask[300:306, 200:204] = 255  # lesion 2: false positive
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[100:110, 110:130] = 255  # columns 120-129 missed
    return mask, label


def lesion_row(study_id: int, number: int, box: tuple[int, int, int, int]) -> dict[str, Any]:
    r0, c0, r1, c1 = box
    return {
        "study_id": study_id,
        "model_version": VERSION,
        "number": number,
        "area_px": (r1 - r0) * (c1 - c0),
        "area_mm2": None,
        "centroid_row": (r0 + r1 - 1) / 2,
        "centroid_col": (c0 + c1 - 1) / 2,
        "bbox_row0": r0,
        "bbox_col0": c0,
        "bbox_row1": r1,
        "bbox_col1": c1,
        "relative_height": 0.25 * number,
        "peak_uptake": 0.9,
        "mean_uptake": 0.5,
        "peak_probability": 0.8,
    }


def unannounced(pending: Sequence[tuple[str, Any]]) -> None:
    """An ``on_commit`` for units of work whose finished jobs nobody waits for here."""


def succeed(db_url: str, study_id: int, mask: np.ndarray) -> None:
    """Mark the study succeeded with ``mask`` as its result, two lesion rows (the two of
    `masks`), and its job's status brought up to date."""
    with session_scope(db_url, unannounced) as session:
        study = session.get(Study, study_id)
        assert study is not None
        study.status = StudyStatus.SUCCEEDED
        studies_repo.upsert_results(
            session,
            [
                {
                    "study_id": study_id,
                    "model_version": VERSION,
                    "mask_png": png(mask),
                    "height": HEIGHT,
                    "width": WIDTH,
                    "tumor_pixels": 224,
                    "tumor_fraction": 0.01,
                    "lesions": 2,
                    "largest_lesion_px": 200,
                    "uptake_mean": 0.5,
                    "uptake_max": 0.9,
                    "dice": 0.4,
                    "precision": 0.45,
                    "recall": 0.5,
                    "inference_seconds": 0.1,
                    "tumor_area_cm2": None,
                    "sdmax_px": 223.6,
                    "sdmax_cm": None,
                    "sdmax_per_height": 0.5,
                    "body_height_px": 447,
                    "body_width_px": 300,
                    "body_height_cm": None,
                    "body_width_cm": None,
                }
            ],
        )
        studies_repo.replace_lesions(
            session,
            [(study_id, VERSION)],
            [
                lesion_row(study_id, 1, (100, 100, 110, 120)),
                lesion_row(study_id, 2, (300, 200, 306, 204)),
            ],
        )
        status.refresh_jobs(session, [study.job_id])
