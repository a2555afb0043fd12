"""Post-processing on out-of-fold predictions: one model per fold, each on its own fold.

Each artifact predicts the validation fold it was trained without (its manifest's seed,
folds and fold), in fp32, with and without flip TTA. On the pooled maps (every patient
and control once) it scores the grid threshold x minimum component x minimum component
peak probability x TTA, the best Dice at each level of clean controls, the choice rule of
`model.training.tuning.choose` cross-fitted over the folds (choose on the others, score
on the held-out one) with and without the peak rule, and where the false positives on
controls sit by image height. This is how docs/MODEL.md's out-of-fold tables were made.

Usage::

    .venv/bin/python scripts/oof_postprocessing.py --data ../shared/data/dmiai2023 \\
        --artifacts FOLD0_DIR FOLD1_DIR FOLD2_DIR FOLD3_DIR FOLD4_DIR
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage

from model.artifact import read_manifest
from model.dataset import find_studies, load_study, split
from model.postprocessing import CONNECTIVITY, to_mask
from model.predictor import Predictor
from model.training import tuning

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
MIN_COMPONENTS = (0, 10, 25, 50, 100)
MIN_PEAKS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BANDS = ((0.0, 0.15, "head"), (0.15, 0.35, "neck, chest"), (0.35, 0.6, "abdomen"),
         (0.6, 0.8, "pelvis"), (0.8, 1.0, "legs"))  # fmt: skip


def components(prob: np.ndarray, label: np.ndarray, threshold: float) -> np.ndarray:
    """(n, 3) size, peak probability and overlap with the expert mask of each component."""
    labels, n = ndimage.label(prob > threshold, structure=CONNECTIVITY)
    if n == 0:
        return np.zeros((0, 3))
    size = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peak = ndimage.maximum(prob, labels, np.arange(1, n + 1))
    overlap = np.bincount(labels[label].ravel(), minlength=n + 1)[1:]
    return np.stack([size, peak, overlap], 1)


def fold_maps(data: Path, artifact: Path) -> tuple[list, dict[bool, list[np.ndarray]]]:
    """The artifact's validation studies and its probability maps (plain, flip TTA)."""
    training = read_manifest(artifact).training
    held_out = (int(training["seed"]), int(training["folds"]), int(training["fold"]))
    studies = [load_study(f) for f in split(find_studies(data), *held_out)[1]]
    pred = Predictor.from_artifact(artifact, device="cpu", batch_size=1, precision="fp32")
    maps = {}
    for tta in (False, True):
        pred.flip_tta = tta
        maps[tta] = pred.probabilities([s.image for s in studies])
    return studies, maps


def score(rows: list, threshold: float, min_px: int, min_peak: float) -> tuple[float, float]:
    """Patient Dice (mean) and share of clean controls from component statistics."""
    dices, clean, n_controls = [], 0, 0
    for is_patient, true_px, by_threshold in rows:
        comps = by_threshold[threshold]
        keep = (comps[:, 0] >= max(min_px, 1)) & (comps[:, 1] >= min_peak)
        predicted = comps[keep, 0].sum()
        if is_patient:
            total = predicted + true_px
            dices.append(1.0 if total == 0 else 2 * comps[keep, 2].sum() / total)
        else:
            n_controls += 1
            clean += predicted == 0
    return float(np.mean(dices)), clean / max(n_controls, 1)


def grid(stats: dict, folds: list[int]) -> list[tuple]:
    out = []
    for t, m, peak, tta in itertools.product(THRESHOLDS, MIN_COMPONENTS, MIN_PEAKS, (False, True)):
        if peak and peak <= t:
            continue
        rows = [r for k in folds for r in stats[k, tta]]
        out.append((*score(rows, t, m, peak), t, m, peak, tta))
    return out


def choose(rows: list[tuple], with_peak: bool) -> tuple:
    """The training's own rule (`model.training.tuning.choose`) over (dice, clean,
    threshold, min_px, peak, tta) rows; the peak takes no part in its tie-breaks."""
    rows = [r for r in rows if with_peak or r[4] == 0.0]
    settings = [tuning.Setting(r[2], r[3], r[5], r[0], r[1]) for r in rows]
    chosen = tuning.choose(settings)
    return next(r for s, r in zip(settings, rows, strict=True) if s is chosen)


def fmt(row: tuple) -> str:
    dice, clean, t, m, peak, tta = row
    return f"Dice {dice:.4f}, clean {clean:.1%}: threshold {t}, min {m} px, peak {peak}, TTA {tta}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, nargs="+", required=True, help="one per fold")
    args = parser.parse_args()

    stats: dict[tuple[int, bool], list] = {}
    band_px, band_controls, n_controls = np.zeros(len(BANDS)), np.zeros(len(BANDS)), 0
    released = read_manifest(args.artifacts[0])
    for k, artifact in enumerate(args.artifacts):
        studies, maps = fold_maps(args.data, artifact)
        for tta, probs in maps.items():
            stats[k, tta] = [
                (
                    s.is_patient,
                    int(s.label.sum()),
                    {t: components(p, s.label, t) for t in THRESHOLDS},
                )
                for s, p in zip(studies, probs, strict=True)
            ]
        for s, p in zip(studies, maps[False], strict=True):  # where control FPs sit
            if s.is_patient:
                continue
            n_controls += 1
            mask = to_mask(p, released.threshold, int(released.postprocessing["min_component_px"]))
            edges = [hi for _, hi, _ in BANDS[:-1]]
            band_of_row = np.digitize(np.arange(mask.shape[0]) / mask.shape[0], edges)
            band_px += np.bincount(band_of_row, weights=mask.sum(1), minlength=len(BANDS))
            labels, n = ndimage.label(mask, structure=CONNECTIVITY)
            centres = ndimage.center_of_mass(mask, labels, range(1, n + 1)) if n else []
            for j in {int(np.digitize(c[0] / mask.shape[0], edges)) for c in centres}:
                band_controls[j] += 1  # controls with a component centred in the band
        print(f"fold {k}: {len(studies)} studies from {artifact}", flush=True)

    folds = list(range(len(args.artifacts)))
    pooled = sorted(grid(stats, folds), key=lambda r: -r[0])
    rule = (released.threshold, int(released.postprocessing["min_component_px"]), 0.0, False)
    print("\npooled out of fold, the first artifact's rule:", fmt((*score(
        [r for k in folds for r in stats[k, False]], *rule[:3]), *rule)))  # fmt: skip
    print("best Dice:", fmt(pooled[0]))
    for level in (0.7, 0.75, 0.8, 0.85, 0.9):
        at = [r for r in pooled if r[1] >= level]
        if at:
            print(f"best Dice with >= {level:.0%} clean:", fmt(at[0]))
    for with_peak in (False, True):
        held = []
        for k in folds:
            c = choose(grid(stats, [j for j in folds if j != k]), with_peak)
            held.append(score(stats[k, c[5]], c[2], c[3], c[4]))
        print(
            f"cross-fitted choice, peak rule {'on' if with_peak else 'off'}: "
            f"Dice {np.mean([h[0] for h in held]):.4f}, clean {np.mean([h[1] for h in held]):.1%}"
        )
    print("\ncontrol FP pixels by image height (first artifact's rule):")
    for j, (lo, hi, name) in enumerate(BANDS):
        print(
            f"  {lo:.0%}-{hi:.0%} ({name}): {band_px[j] / max(band_px.sum(), 1):.0%} of FP px, "
            f"{int(band_controls[j])} of {n_controls} controls"
        )


if __name__ == "__main__":
    main()
