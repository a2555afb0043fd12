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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.postprocessing import label_components
from model.training import tuning
from model.training.tuning import Setting

THRESHOLDS = tuple(float(round(t, 2)) for t in np.arange(0.2, 0.751, 0.05))
MIN_COMPONENTS = (0, 10, 25, 50, 100)
#: 0 means no peak rule (any component above the threshold is kept).
MIN_PEAKS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The two-tier rule's first tier sizes (large components) and second tiers (small ones
#: with a very high peak; the maps are uint8, so 1.0 is a saturated pixel).
LARGE_COMPONENTS = (100, 150, 200, 300)
#: The fields of a `Setting` that are its score, not its rule.
SCORES = ("dice", "controls_clean_fraction")
SMALL_TIERS = tuple((px, pk) for px in (10, 25, 50) for pk in (0.95, 0.98, 0.99, 1.0))


#: Expert lesions at least this large count in the lesion recall.
RECALL_MIN_PX = 50


@dataclass
class _Table:
    """Every study's components at one threshold: concatenated arrays, `study` indexes.
    `hits` pairs (expert lesion, component) that overlap, by their indexes."""

    study: np.ndarray
    size: np.ndarray
    peak: np.ndarray
    tp: np.ndarray
    hits: np.ndarray


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
        # the expert lesions of RECALL_MIN_PX or more, numbered across studies
        experts, n_lesions, per_study = [], 0, []
        for lab in labels:
            comp, n = label_components(lab)
            big = np.zeros(n + 1, dtype=np.int64)
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            for k in range(1, n + 1):
                if sizes[k] >= RECALL_MIN_PX:
                    n_lesions += 1
                    big[k] = n_lesions  # 1-based; 0: small or background
            experts.append(big[comp])
            per_study.append(int(np.count_nonzero(big)))
        self.n_lesions = n_lesions
        #: The study of each expert lesion, by its number.
        self.lesion_study = np.repeat(np.arange(len(per_study)), per_study)
        self.tables: dict[float, _Table] = {}
        for t in thresholds:
            parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
            hits: list[np.ndarray] = []
            offset = 0
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
                expert = experts[i].ravel()
                both = (expert > 0) & (flat > 0)
                if both.any():
                    pairs = np.unique(np.stack([expert[both] - 1, flat[both] - 1 + offset]), axis=1)
                    hits.append(pairs.T)
                offset += n
            self.tables[t] = _Table(
                np.concatenate(
                    [np.full(len(s), i) for i, s, _, _ in parts] or [np.zeros(0)]
                ).astype(int),
                np.concatenate([s for _, s, _, _ in parts] or [np.zeros(0)]),
                np.concatenate([pk for _, _, pk, _ in parts] or [np.zeros(0)]),
                np.concatenate([tp for _, _, _, tp in parts] or [np.zeros(0)]),
                np.concatenate(hits) if hits else np.zeros((0, 2), dtype=np.int64),
            )

    def kept(
        self,
        threshold: float,
        min_px: int,
        min_peak: float,
        small_px: int = 0,
        small_peak: float = 0.0,
    ) -> np.ndarray:
        """Which components of the threshold's table a setting keeps."""
        tab = self.tables[threshold]
        keep = (tab.size >= min_px) & (tab.peak >= min_peak)
        if small_peak > 0:
            keep |= (tab.size >= small_px) & (tab.peak >= small_peak)
        return keep

    def per_study(
        self,
        threshold: float,
        min_px: int,
        min_peak: float,
        small_px: int = 0,
        small_peak: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Dice per study, predicted pixels per study) under one setting."""
        tab = self.tables[threshold]
        keep = self.kept(threshold, min_px, min_peak, small_px, small_peak)
        n = len(self.label_px)
        pred = np.bincount(tab.study[keep], weights=tab.size[keep], minlength=n)
        tp = np.bincount(tab.study[keep], weights=tab.tp[keep], minlength=n)
        denom = pred + self.label_px
        dice = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
        return dice, pred

    def lesion_recall(
        self, threshold: float, min_px: int, min_peak: float, small_px: int = 0,
        small_peak: float = 0.0, subset: np.ndarray | None = None,
    ) -> tuple[float, float]:  # fmt: skip
        """(share of the expert lesions of RECALL_MIN_PX or more that a kept component
        touches, kept components per control) on `subset`."""
        tab = self.tables[threshold]
        keep = self.kept(threshold, min_px, min_peak, small_px, small_peak)
        sel = np.ones(len(self.is_patient), bool) if subset is None else subset
        ctrls = sel & ~self.is_patient
        fp = float(np.count_nonzero(keep & ctrls[tab.study])) / max(int(ctrls.sum()), 1)
        if not self.n_lesions:
            return 1.0, fp
        found = np.zeros(self.n_lesions, dtype=bool)
        hit = tab.hits[keep[tab.hits[:, 1]]] if len(tab.hits) else tab.hits
        found[hit[:, 0]] = True
        in_sel = sel[self.lesion_study]
        return float(found[in_sel].mean()) if in_sel.any() else 1.0, fp

    def score(
        self,
        threshold: float,
        min_px: int,
        min_peak: float,
        subset: np.ndarray | None = None,
        small_px: int = 0,
        small_peak: float = 0.0,
    ) -> tuple[float, float]:
        """(mean patient Dice, share of controls with no predicted pixel) on `subset`."""
        dice, pred = self.per_study(threshold, min_px, min_peak, small_px, small_peak)
        sel = np.ones(len(dice), bool) if subset is None else subset
        pats, ctrls = sel & self.is_patient, sel & ~self.is_patient
        d = float(dice[pats].mean()) if pats.any() else 0.0
        clean = float((pred[ctrls] == 0).mean()) if ctrls.any() else 1.0
        return d, clean


def grid(
    tables: ComponentTables,
    flip_tta: bool,
    subset: np.ndarray | None = None,
    two_tier: bool = False,
) -> list[Setting]:
    """Every (threshold, min component, min peak) setting scored on `subset`; with
    `two_tier` also every large first tier with every small second tier."""
    out = []
    for t in tables.tables:
        for m in MIN_COMPONENTS:
            for pk in MIN_PEAKS:
                if 0 < pk <= t:
                    continue  # a peak rule at or below the threshold is no rule
                d, c = tables.score(t, m, pk, subset)
                out.append(Setting(t, m, flip_tta, d, c, min_peak=pk))
        if not two_tier:
            continue
        for m in LARGE_COMPONENTS:
            for pk in MIN_PEAKS:
                if 0 < pk <= t:
                    continue
                for small_px, small_peak in SMALL_TIERS:
                    if small_peak <= max(pk, t):
                        continue
                    d, c = tables.score(t, m, pk, subset, small_px, small_peak)
                    out.append(Setting(t, m, flip_tta, d, c, pk, small_px, small_peak))
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


def crossfit_per_study(
    plain: ComponentTables | None,
    tta: ComponentTables | None,
    folds: Sequence[int],
    min_clean: float = 0.0,
    two_tier: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Choose on all folds but one, score that one's studies, in turn.

    Returns:
        (each study's Dice and predicted pixels under the setting chosen without its
        fold, and each fold's choice).
    """
    fold_ids = np.asarray(folds)
    dice = np.zeros(len(fold_ids))
    pred = np.zeros(len(fold_ids))
    chosen = []
    for k in sorted(set(fold_ids.tolist())):
        train = fold_ids != k
        settings = (grid(plain, False, train, two_tier) if plain else []) + (
            grid(tta, True, train, two_tier) if tta else []
        )
        c = choose(settings, min_clean)
        tables = tta if c.flip_tta else plain
        assert tables is not None
        d, p = tables.per_study(
            c.threshold, c.min_component_px, c.min_peak, c.small_px, c.small_peak
        )
        dice[~train], pred[~train] = d[~train], p[~train]
        rule = {key: v for key, v in asdict(c).items() if key not in SCORES}
        chosen.append({"fold": k, **rule})
    return dice, pred, chosen


def crossfit(
    plain: ComponentTables,
    tta: ComponentTables | None,
    folds: Sequence[int],
    min_clean: float = 0.0,
    two_tier: bool = False,
) -> dict[str, Any]:
    """Choose on all folds but one, score on that one, in turn.

    Returns:
        Pooled patient Dice and clean-control share of the held-out choices (each
        study scored under the setting chosen without its fold), and each fold's choice.
    """
    dice, pred, chosen = crossfit_per_study(plain, tta, folds, min_clean, two_tier)
    pats, ctrls = plain.is_patient, ~plain.is_patient
    return {
        "dice": float(dice[pats].mean()),
        "controls_clean_fraction": float((pred[ctrls] == 0).mean()) if ctrls.any() else 1.0,
        "per_fold": chosen,
    }
