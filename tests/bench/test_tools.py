"""The tools beside the benchmarks still run: the gray data copy and the load test (a
smoke test, and a larger run behind the ``bench`` marker)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench import gray_copy, load_test
from model.preprocessing import decode_image, decode_mask


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_gray_copy_writes_mode_l_pngs_that_decode_the_same(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(40, 24), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    mask = np.where(gray < 50, 255, 0).astype(np.uint8)
    mask_rgba = np.dstack([mask, mask, mask, np.full_like(mask, 255)])
    (src / "patients" / "imgs").mkdir(parents=True)
    (src / "patients" / "labels").mkdir(parents=True)
    (src / "patients" / "imgs" / "patient_000.png").write_bytes(_png(rgba, "RGBA"))
    (src / "patients" / "labels" / "segmentation_000.png").write_bytes(_png(mask_rgba, "RGBA"))
    (src / "README.md").write_text("data\n")

    assert gray_copy.main(src, dst) == 0

    for rel, decode in (
        ("patients/imgs/patient_000.png", decode_image),
        ("patients/labels/segmentation_000.png", decode_mask),
    ):
        copied = (dst / rel).read_bytes()
        assert Image.open(io.BytesIO(copied)).mode == "L"
        assert np.array_equal(decode(copied), decode((src / rel).read_bytes()))
    assert (dst / "README.md").read_text() == "data\n"


def _load_test(tmp_path: Path, clients: int, studies: int, job_size: int) -> dict[str, Any]:
    out = tmp_path / "report.json"
    argv = ["--clients", str(clients), "--studies", str(studies), "--job-size", str(job_size)]
    assert load_test.main([*argv, "--timeout", "300", "--out", str(out)]) == 0
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["jobs"] == studies // job_size
    assert report["studies_in_db"] == studies
    assert report["lost"] == 0
    assert report["duplicate_results"] == 0
    assert report["succeeded"] + report["failed"] == studies
    return report


def test_load_test_smoke(tmp_path: Path) -> None:
    _load_test(tmp_path, clients=1, studies=2, job_size=2)


@pytest.mark.bench
def test_load_test_accounts_for_every_study(tmp_path: Path) -> None:
    _load_test(tmp_path, clients=4, studies=16, job_size=2)
