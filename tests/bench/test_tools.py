"""The tools beside the benchmarks still run: the gray data copy and the load test."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
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


def test_load_test_accounts_for_every_study(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["--clients", "2", "--studies", "4", "--job-size", "2", "--timeout", "300"]
    assert load_test.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["jobs"] == 2
    assert report["studies_in_db"] == 4
    assert report["lost"] == 0
    assert report["duplicate_results"] == 0
    assert report["succeeded"] + report["failed"] == 4
