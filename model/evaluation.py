"""Scoring masks the way the competition does, and the `evaluate` report."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.metrics import dice, mean_or_none, precision_recall

if TYPE_CHECKING:
    from model.dataset import StudyFile


@dataclass
class StudyScore:
    """One row of the per-study CSV."""

    name: str
    is_patient: bool
    dice: float | None
    precision: float | None
    recall: float | None
    predicted_px: int
    true_px: int


def score_study(name: str, pred: np.ndarray, truth: np.ndarray, is_patient: bool) -> StudyScore:
    p, r = precision_recall(pred, truth)
    return StudyScore(
        name,
        is_patient,
        dice(pred, truth) if is_patient else None,
        p,
        r,
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(truth)),
    )


def summarize(scores: Sequence[StudyScore]) -> dict[str, float | int | None]:
    """Competition Dice (mean over patients) and the control figures.

    Precision and recall are pooled over all patient pixels. `controls_clean_fraction` is
    the share of controls with no predicted tumor pixel.
    """
    patients = [s for s in scores if s.is_patient]
    controls = [s for s in scores if not s.is_patient]
    tp = sum((s.recall or 0.0) * s.true_px for s in patients)
    pred_px = sum(s.predicted_px for s in patients)
    true_px = sum(s.true_px for s in patients)
    return {
        "dice": mean_or_none(s.dice for s in patients),
        "precision": tp / pred_px if pred_px else None,
        "recall": tp / true_px if true_px else None,
        "controls_clean_fraction": (
            sum(s.predicted_px == 0 for s in controls) / len(controls) if controls else None
        ),
        "controls_mean_fp_px": (
            float(np.mean([s.predicted_px for s in controls])) if controls else None
        ),
        "n_patients": len(patients),
        "n_controls": len(controls),
    }


def write_csv(scores: Sequence[StudyScore], path: Path) -> None:
    """Write the per-study scores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(StudyScore.__dataclass_fields__))
        writer.writeheader()
        for s in scores:
            writer.writerow(asdict(s))


def read_csv(path: Path) -> list[StudyScore]:
    """The per-study scores `write_csv` wrote."""

    def num(v: str) -> float | None:
        return None if v == "" else float(v)

    with Path(path).open(newline="") as fh:
        return [
            StudyScore(
                r["name"],
                r["is_patient"] == "True",
                num(r["dice"]),
                num(r["precision"]),
                num(r["recall"]),
                int(r["predicted_px"]),
                int(r["true_px"]),
            )  # fmt: skip
            for r in csv.DictReader(fh)
        ]


def paired(
    new: Sequence[StudyScore], old: Sequence[StudyScore], resamples: int = 10_000
) -> dict[str, float | int]:
    """Patient-by-patient comparison of two models scored on the same studies.

    Returns:
        Mean Dice of each, the mean paired difference (new - old) with a 95 % bootstrap
        interval over patients (seeded), patients better / equal / worse, and each
        model's share of clean controls.

    Raises:
        ValueError: The two were not scored on the same studies.
    """
    a = {s.name: s for s in new}
    b = {s.name: s for s in old}
    if a.keys() != b.keys():
        raise ValueError("the two evaluations cover different studies")
    names = sorted(n for n in a if a[n].is_patient)
    diff = np.array([(a[n].dice or 0.0) - (b[n].dice or 0.0) for n in names])
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    controls = [n for n in a if not a[n].is_patient]

    def clean(scores: dict[str, StudyScore]) -> float:
        return float(np.mean([scores[n].predicted_px == 0 for n in controls])) if controls else 1.0

    return {
        "n_patients": len(names),
        "dice_new": float(np.mean([a[n].dice or 0.0 for n in names])),
        "dice_old": float(np.mean([b[n].dice or 0.0 for n in names])),
        "mean_difference": float(diff.mean()),
        "ci95_low": float(np.quantile(boot, 0.025)),
        "ci95_high": float(np.quantile(boot, 0.975)),
        "better": int((diff > 1e-9).sum()),
        "equal": int((np.abs(diff) <= 1e-9).sum()),
        "worse": int((diff < -1e-9).sum()),
        "clean_new": clean(a),
        "clean_old": clean(b),
    }


# The official DM i AI 2023 baseline: a pixel is tumor when its PNG gray value is < 50.
BASELINE_GRAY_LEVEL = 50


def threshold_baseline(image: np.ndarray) -> np.ndarray:
    """The competition's threshold baseline on a network-input array (inverted [0, 1])."""
    return (1.0 - image) * 255.0 < BASELINE_GRAY_LEVEL - 0.5


def evaluate_folder(
    data_dir: Path,
    predict: Callable[[list[np.ndarray]], list[np.ndarray]],
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
    validation_of: tuple[int, int, int] | None = None,
) -> list[StudyScore]:
    """Score a predictor on a folder in the DM i AI layout, `chunk` studies at a time.

    Args:
        data_dir: Folder with patients/imgs, patients/labels and controls/imgs.
        predict: Batched predictor: images in, bool masks out.
        chunk: Studies decoded and predicted together (bounds memory).
        progress: Called with the number of studies done after each chunk.
        validation_of: (seed, folds, fold) of a training run: score only the studies that
            run held out for validation (see `model.dataset.split`).

    Returns:
        One score per study.
    """
    from model.dataset import find_studies, split

    files = find_studies(data_dir)
    if validation_of is not None:
        seed, folds, fold = validation_of
        files = split(files, seed, folds, fold)[1]
    return evaluate_files(files, predict, chunk, progress)


def evaluate_files(
    files: Sequence[StudyFile],
    predict: Callable[[list[np.ndarray]], list[np.ndarray]],
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[StudyScore]:
    """Score a predictor on the given studies, `chunk` at a time (as `evaluate_folder`).

    Returns:
        One score per study, in the order of `files`.
    """
    from model.dataset import load_study

    scores: list[StudyScore] = []
    for start in range(0, len(files), chunk):
        studies = [load_study(f) for f in files[start : start + chunk]]
        masks = predict([s.image for s in studies])
        scores += [
            score_study(s.name, m, s.label, s.is_patient)
            for s, m in zip(studies, masks, strict=True)
        ]
        if progress is not None:
            progress(len(studies))
    return scores
