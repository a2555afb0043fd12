"""The model commands from the command line: evaluate, model register/promote/list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_IMGS, SAMPLE_LABELS
from tests.model.conftest import tiny_artifact  # noqa: F401  (fixture)


def tumorseg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """Two labelled patients and a control from samples/, in the DM i AI layout."""
    root = tmp_path / "data"
    for sub in ("patients/imgs", "patients/labels", "controls/imgs"):
        (root / sub).mkdir(parents=True)
    for n in ("000", "001"):
        shutil.copy(SAMPLE_IMGS / f"patient_{n}.png", root / "patients/imgs")
        shutil.copy(SAMPLE_LABELS / f"segmentation_{n}.png", root / "patients/labels")
    shutil.copy(SAMPLE_IMGS / "control_003.png", root / "controls/imgs")
    return root


def test_evaluate_json_has_the_competition_keys(small_data: Path, tmp_path: Path) -> None:
    csv = tmp_path / "scores.csv"
    out = tumorseg("evaluate", "--data", str(small_data), "--baseline", "threshold",
                   "--json", "--csv", str(csv))  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    keys = {"dice", "precision", "recall", "controls_clean_fraction", "n_patients", "n_controls"}
    assert keys <= summary.keys()
    assert summary["n_patients"] == 2
    assert summary["n_controls"] == 1
    assert 0.0 < summary["dice"] < 1.0
    assert len(csv.read_text().splitlines()) == 4  # header + 3 studies


def test_evaluate_paired_with_another_evaluation(small_data: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    base = ["evaluate", "--data", str(small_data), "--baseline", "threshold", "--json"]
    assert tumorseg(*base, "--csv", str(first)).returncode == 0
    out = tumorseg(*base, "--csv", str(tmp_path / "again.csv"), "--paired-with", str(first))
    assert out.returncode == 0, out.stderr
    pair = json.loads(out.stdout.strip().splitlines()[-1])["paired"]
    assert pair["n_patients"] == 2
    assert pair["mean_difference"] == 0.0
    assert pair["equal"] == 2
    missing = tumorseg(*base, "--paired-with", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert "--paired-with" in missing.stdout


def test_evaluate_refuses_a_folder_without_studies(tmp_path: Path) -> None:
    out = tumorseg("evaluate", "--data", str(tmp_path), "--json")
    assert out.returncode == 2
    assert "holds no studies" in out.stdout


def test_register_promote_list(tiny_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    version = tiny_artifact.name
    reg = tumorseg("model", "register", str(tiny_artifact), env=env)
    assert reg.returncode == 0, reg.stderr
    assert f"registered {version}" in reg.stdout, reg.stderr
    assert tumorseg("model", "promote", "no-such-version", env=env).returncode == 2
    assert tumorseg("model", "promote", version, env=env).returncode == 0
    header, *rows = tumorseg("model", "list", env=env).stdout.splitlines()
    assert header.split() == ["promoted", "version", "trained", "dice", "path"]
    assert [row.split()[:2] for row in rows] == [["*", version]]


def test_register_refuses_a_corrupt_artifact(tiny_artifact: Path, tmp_path: Path) -> None:  # noqa: F811
    (tiny_artifact / "model.safetensors").write_bytes(b"not weights")
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    out = tumorseg("model", "register", str(tiny_artifact), env=env)
    assert out.returncode == 2
    assert "sha256" in out.stdout


@pytest.fixture
def tiny_ensemble(tmp_path: Path) -> Path:
    import torch

    from model.artifact import save_ensemble
    from model.manifest import Manifest
    from model.network import build_network
    from tests.model.conftest import TINY_ARCH

    torch.manual_seed(0)
    manifest = Manifest(version="pending", trained=False, architecture=dict(TINY_ARCH))
    return save_ensemble([build_network(TINY_ARCH) for _ in range(2)], manifest, tmp_path)


def test_evaluate_members_runs_the_first_members_and_records_the_version(
    small_data: Path, tiny_ensemble: Path, tmp_path: Path
) -> None:
    for members, ran in (("1", 1), ("0", 2)):
        out = tumorseg("evaluate", "--data", str(small_data), "--artifact", str(tiny_ensemble),
                       "--members", members, "--device", "cpu", "--json",
                       "--csv", str(tmp_path / "scores.csv"))  # fmt: skip
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["model"] == tiny_ensemble.name
        assert summary["members"] == ran


def test_evaluate_refuses_negative_members(tmp_path: Path) -> None:
    out = tumorseg("evaluate", "--data", str(tmp_path), "--members", "-1")
    assert out.returncode == 2
    assert "--members: must be >= 0" in out.stderr


def test_register_checks_every_member(tiny_ensemble: Path, tmp_path: Path) -> None:
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}"}
    (tiny_ensemble / "member-2.safetensors").write_bytes(b"not weights")
    out = tumorseg("model", "register", str(tiny_ensemble), env=env)
    assert out.returncode == 2
    assert "member-2.safetensors" in out.stdout


def test_evaluate_validation_scores_an_ensemble_by_the_members_that_held_out_each_study(
    small_data: Path, tmp_path: Path
) -> None:
    from tests.model.test_held_out import constant, ensemble, runs

    # member 1 calls every pixel tumor, member 2 none; seed 3 of 2 folds: fold 0 holds out
    # two patients and the control, fold 1 the third patient
    artifact = ensemble(tmp_path / "e", [constant(5.0), constant(-5.0)], [0, 1], runs(0, 1))
    csv = tmp_path / "scores.csv"
    out = tumorseg("evaluate", "--data", str(small_data), "--artifact", str(artifact),
                   "--split", "validation", "--device", "cpu", "--json",
                   "--csv", str(csv))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["members"] == 2
    assert summary["scored_by"] == {"1": 2, "2": 1}
    assert (summary["n_patients"], summary["n_controls"]) == (2, 1)
    predicted_px = [int(r.split(",")[5]) for r in csv.read_text().splitlines()[1:]]
    assert sorted(px > 0 for px in predicted_px) == [False, True, True]  # member 1's two
    fast = tumorseg("evaluate", "--data", str(small_data), "--artifact", str(artifact),
                    "--split", "validation", "--members", "1", "--device", "cpu", "--json",
                    "--csv", str(tmp_path / "fast.csv"))  # fmt: skip
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert json.loads(fast.stdout.strip().splitlines()[-1])["scored_by"] == {"1": 2}


def test_evaluate_validation_refuses_an_ensemble_that_does_not_say_what_it_held_out(
    small_data: Path, tiny_ensemble: Path
) -> None:
    out = tumorseg("evaluate", "--data", str(small_data), "--artifact", str(tiny_ensemble),
                   "--split", "validation", "--json")  # fmt: skip
    assert out.returncode == 2
    assert "does not say which studies its members held out" in out.stdout
    assert "'seed'" not in out.stdout
