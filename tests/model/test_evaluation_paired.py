"""The paired, patient-by-patient comparison of two evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.evaluation import StudyScore, paired, read_csv, write_csv


def _s(name: str, dice: float | None, predicted: int = 0, patient: bool = True) -> StudyScore:
    return StudyScore(name, patient, dice, None, None, predicted, 10 if patient else 0)


def test_paired_difference_counts_and_interval() -> None:
    new = [
        _s("a", 0.9),
        _s("b", 0.5),
        _s("c", 0.4),
        _s("x", None, 0, False),
        _s("y", None, 3, False),
    ]
    old = [
        _s("a", 0.7),
        _s("b", 0.5),
        _s("c", 0.6),
        _s("x", None, 5, False),
        _s("y", None, 3, False),
    ]
    out = paired(new, old)
    assert out["n_patients"] == 3
    assert out["mean_difference"] == pytest.approx((0.2 + 0.0 - 0.2) / 3)
    assert (out["better"], out["equal"], out["worse"]) == (1, 1, 1)
    assert out["ci95_low"] <= out["mean_difference"] <= out["ci95_high"]
    assert out["clean_new"] == 0.5
    assert out["clean_old"] == 0.0
    with pytest.raises(ValueError, match="different studies"):
        paired(new[:2], old)


def test_scores_survive_the_csv_round_trip(tmp_path: Path) -> None:
    scores = [_s("a", 0.25, 4), _s("x", None, 0, False)]
    write_csv(scores, tmp_path / "s.csv")
    assert read_csv(tmp_path / "s.csv") == scores
