"""Post-processing chosen on pooled out-of-fold maps, cross-fitted by fold.

Each fold run saves its validation fold's probabilities (`oof.npz`); pooled, the five
folds give one held-out map per development study. The settings are a threshold, a
minimum component size, a peak rule (a component is kept only if its highest
probability reaches `min_peak`: hysteresis thresholding) and flip TTA. Every component
of every study is tabulated once per threshold (size, peak, overlap with the label), so
each (size, peak) filter is scored with array operations instead of re-labelling masks.

`crossfit` chooses on four folds and scores on the fifth, in turn, which is the honest
estimate; `frontier` gives the whole trade between patient Dice and clean controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.postprocessing import label_components
from model.training import tuning
from model.training.tuning import Setting

THRESHOLDS = tuple(float(round(t, 2)) for t in np.arange(0.2, 0.751, 0.05))
MIN_COMPONENTS = (0, 10, 25, 50, 100)
#: 0 means no peak rule (any component above the threshold is kept).
MIN_PEAKS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class _Table:
    """Every study's components at one threshold: concatenated arrays, `study` indexes."""

    study: np.ndarray
    size: np.ndarray
    peak: np.ndarray
    tp: np.ndarray


class ComponentTables:
    """The components of `probs` at each threshold, with the labels' pixel counts.

    Args:
        probs: Probability maps, one per study.
        labels: Bool label masks (all False for controls).
        is_patient: Which studies are patients (the Dice averages over those).
        thresholds: The thresholds to tabulate.
    """

    def __init__(
        self,
        probs: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        is_patient: Sequence[bool],
        thresholds: Sequence[float] = THRESHOLDS,
    ) -> None:
        self.is_patient = np.asarray(is_patient, dtype=bool)
        self.label_px = np.array([int(np.count_nonzero(lab)) for lab in labels])
        self.tables: dict[float, _Table] = {}
        for t in thresholds:
            parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
            for i, (p, lab) in enumerate(zip(probs, labels, strict=True)):
                comp, n = label_components(p > t)
                if n == 0:
                    continue
                flat = comp.ravel()
                size = np.bincount(flat, minlength=n + 1)[1:]
                tp = np.bincount(flat, weights=lab.ravel().astype(np.float64), minlength=n + 1)[1:]
                peak = np.zeros(n + 1)
                np.maximum.at(peak, flat, p.ravel().astype(np.float64))
                parts.append((i, size, peak[1:], tp))
            self.tables[t] = _Table(
                np.concatenate(
                    [np.full(len(s), i) for i, s, _, _ in parts] or [np.zeros(0)]
                ).astype(int),
                np.concatenate([s for _, s, _, _ in parts] or [np.zeros(0)]),
                np.concatenate([pk for _, _, pk, _ in parts] or [np.zeros(0)]),
                np.concatenate([tp for _, _, _, tp in parts] or [np.zeros(0)]),
            )

    def per_study(
        self, threshold: float, min_px: int, min_peak: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Dice per study, predicted pixels per study) under one setting."""
        tab = self.tables[threshold]
        keep = (tab.size >= min_px) & (tab.peak >= min_peak)
        n = len(self.label_px)
        pred = np.bincount(tab.study[keep], weights=tab.size[keep], minlength=n)
        tp = np.bincount(tab.study[keep], weights=tab.tp[keep], minlength=n)
        denom = pred + self.label_px
        dice = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
        return dice, pred

    def score(
        self, threshold: float, min_px: int, min_peak: float, subset: np.ndarray | None = None
    ) -> tuple[float, float]:
        """(mean patient Dice, share of controls with no predicted pixel) on `subset`."""
        dice, pred = self.per_study(threshold, min_px, min_peak)
        sel = np.ones(len(dice), bool) if subset is None else subset
        pats, ctrls = sel & self.is_patient, sel & ~self.is_patient
        d = float(dice[pats].mean()) if pats.any() else 0.0
        clean = float((pred[ctrls] == 0).mean()) if ctrls.any() else 1.0
        return d, clean


def grid(
    tables: ComponentTables, flip_tta: bool, subset: np.ndarray | None = None
) -> list[Setting]:
    """Every (threshold, min component, min peak) setting scored on `subset`."""
    out = []
    for t in tables.tables:
        for m in MIN_COMPONENTS:
            for pk in MIN_PEAKS:
                if 0 < pk <= t:
                    continue  # a peak rule at or below the threshold is no rule
                d, c = tables.score(t, m, pk, subset)
                out.append(Setting(t, m, flip_tta, d, c, min_peak=pk))
    return out


def choose(
    settings: Sequence[Setting], min_clean: float = 0.0, dice_tolerance: float = 0.01
) -> Setting:
    """The released rule (`model/training/tuning.py::choose`: best Dice, then within
    `dice_tolerance` of it no flip TTA, more clean controls, the simpler rule) among the
    settings with at least `min_clean` clean controls (all settings if none reaches it)."""
    ok = [s for s in settings if (s.controls_clean_fraction or 0.0) >= min_clean]
    return tuning.choose(ok or settings, dice_tolerance)


def frontier(settings: Sequence[Setting]) -> list[Setting]:
    """The settings no other beats on both Dice and clean controls, by clean fraction."""
    best: list[Setting] = []
    for s in sorted(settings, key=lambda s: (-(s.controls_clean_fraction or 0.0), -s.dice)):
        if not best or s.dice > best[-1].dice:
            best.append(s)
    return best


def crossfit(
    plain: ComponentTables,
    tta: ComponentTables | None,
    folds: Sequence[int],
    min_clean: float = 0.0,
) -> dict[str, float | list[dict[str, float]]]:
    """Choose on all folds but one, score on that one, in turn.

    Returns:
        Pooled patient Dice and clean-control share of the held-out choices (each
        study scored under the setting chosen without its fold), and each fold's choice.
    """
    fold_ids = np.asarray(folds)
    dice = np.zeros(len(fold_ids))
    pred = np.zeros(len(fold_ids))
    chosen = []
    for k in sorted(set(fold_ids.tolist())):
        train = fold_ids != k
        settings = grid(plain, False, train) + (grid(tta, True, train) if tta else [])
        c = choose(settings, min_clean)
        d, p = (tta if c.flip_tta and tta else plain).per_study(
            c.threshold, c.min_component_px, c.min_peak
        )
        dice[~train], pred[~train] = d[~train], p[~train]
        chosen.append(
            {"fold": k, "threshold": c.threshold, "min_component_px": c.min_component_px,
             "min_peak": c.min_peak, "flip_tta": c.flip_tta}
        )  # fmt: skip
    pats, ctrls = plain.is_patient, ~plain.is_patient
    return {
        "dice": float(dice[pats].mean()),
        "controls_clean_fraction": float((pred[ctrls] == 0).mean()) if ctrls.any() else 1.0,
        "per_fold": chosen,
    }
