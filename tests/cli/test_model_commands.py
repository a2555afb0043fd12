"""The model commands from the command line: evaluate, model register/promote/list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model.conftest import tiny_artifact  # noqa: F401  (fixture)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dmiai2023"


def tumorseg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"development data not found at {DATA}")
    root = tmp_path / "data"
    for sub in ("patients/imgs", "patients/labels", "controls/imgs"):
        (root / sub).mkdir(parents=True)
    for n in ("000", "001"):
        shutil.copy(DATA / f"patients/imgs/patient_{n}.png", root / "patients/imgs")
        shutil.copy(DATA / f"patients/labels/segmentation_{n}.png", root / "patients/labels")
    shutil.copy(DATA / "controls/imgs/control_000.png", root / "controls/imgs")
    return root


def test_evaluate_json_has_the_competition_keys(small_data: Path, tmp_path: Path) -> None:
    csv = tmp_path / "scores.csv"
    out = tumorseg("evaluate", "--data", str(small_data), "--baseline", "threshold",
                   "--json", "--csv", str(csv))  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    keys = {"dice", "precision", "recall", "controls_clean_fraction", "n_patients", "n_controls"}
    assert keys <= summary.keys()
    assert summary["n_patients"] == 2 and summary["n_controls"] == 1
    assert 0.0 < summary["dice"] < 1.0
    assert len(csv.read_text().splitlines()) == 4  # header + 3 studies


def test_evaluate_refuses_a_folder_without_studies(tmp_path: Path) -> None:
    out = tumorseg("evaluate", "--data", str(tmp_path), "--json")
    assert out.returncode == 2 and "holds no studies" in out.stdout


def test_register_promote_list(tiny_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    version = tiny_artifact.name
    reg = tumorseg("model", "register", str(tiny_artifact), env=env)
    assert reg.returncode == 0 and f"registered {version}" in reg.stdout, reg.stderr
    assert tumorseg("model", "promote", "no-such-version", env=env).returncode == 2
    assert tumorseg("model", "promote", version, env=env).returncode == 0
    listing = tumorseg("model", "list", env=env).stdout
    assert f"* {version}" in listing


def test_register_refuses_a_corrupt_artifact(tiny_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    (tiny_artifact / "model.safetensors").write_bytes(b"not weights")
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    out = tumorseg("model", "register", str(tiny_artifact), env=env)
    assert out.returncode == 2 and "sha256" in out.stdout
