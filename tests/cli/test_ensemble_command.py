"""`tumorseg ensemble pack | tune | build` from the command line on two tiny fold runs."""

from __future__ import annotations

import json
from pathlib import Path

from model.manifest import read_manifest
from tests.cli.test_model_commands import tumorseg
from tests.model.test_ensembling import _fold
from tests.model.test_training_smoke import tiny_data  # noqa: F401  (fixture)


def test_pack_tune_and_build(tiny_data: Path, tmp_path: Path) -> None:  # noqa: F811
    runs = [_fold(tiny_data, tmp_path / "runs", k) for k in (0, 1)]
    folds = tmp_path / "folds"
    for k, run in enumerate(runs):
        done = tumorseg("ensemble", "pack", str(run), "--into", str(folds), "--name", f"fold-{k}")
        assert done.returncode == 0, done.stdout + done.stderr
    packed = [str(folds / "fold-0"), str(folds / "fold-1")]
    tuned = tumorseg("ensemble", "tune", *packed, "--data", str(tiny_data), "--json")
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    report = json.loads(tuned.stdout)
    assert report["folds"] == [0, 1]
    assert report["n_patients"] == 4
    assert report["frontier"]
    text = tumorseg("ensemble", "tune", *packed, "--data", str(tiny_data))
    assert "cross-fitted: Dice" in text.stdout
    assert "frontier" in text.stdout
    built = tumorseg(
        "ensemble", "build", *packed, "--data", str(tiny_data), "--out", str(tmp_path / "e")
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (ensemble,) = (tmp_path / "e").iterdir()
    assert read_manifest(ensemble).n_members == 2


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    done = tumorseg("ensemble", "pack", str(tmp_path), "--into", str(tmp_path / "f"), "--name", "x")
    assert done.returncode == 2
    assert "tumorseg ensemble:" in done.stdout
    done = tumorseg("ensemble", "tune", str(tmp_path), "--data", str(tmp_path), "--min-clean", "2")
    assert done.returncode == 2
    assert "--min-clean" in done.stdout


def test_oof_and_retune_make_a_new_version_with_the_same_weights(
    tiny_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = _fold(tiny_data, tmp_path / "runs", 0)
    (run / "oof.npz").unlink()  # as an artifact from before training wrote its maps
    maps = tmp_path / "maps.npz"
    done = tumorseg("ensemble", "oof", str(run), "--data", str(tiny_data), "--out", str(maps))
    assert done.returncode == 0, done.stdout + done.stderr
    assert maps.is_file(), done.stdout + done.stderr
    args = ["ensemble", "retune", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "r")]
    missing = tumorseg(*args)
    assert missing.returncode == 2
    assert "ensemble oof" in missing.stdout
    done = tumorseg(*args, "--oof", str(maps), "--min-clean", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    (new,) = (tmp_path / "r").iterdir()
    old_m, new_m = read_manifest(run), read_manifest(new)
    assert new_m.weights_sha256 == old_m.weights_sha256
    assert new_m.version != old_m.version
    assert new_m.training["retuned_from"]["version"] == old_m.version
    assert new_m.threshold == new_m.metrics["oof"]["chosen"]["threshold"]
    assert {"min_component_px", "min_peak", "flip_tta"} == set(new_m.postprocessing)
