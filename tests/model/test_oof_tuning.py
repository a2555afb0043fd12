"""Pooled out-of-fold tuning: the tabulated components score exactly what masks would."""

from __future__ import annotations

import numpy as np
import pytest

from model.metrics import dice
from model.postprocessing import label_components, to_mask
from model.training import oof_tuning
from model.training.tuning import Setting


def _maps(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[bool]]:
    rng = np.random.default_rng(seed)
    probs, labels, patient = [], [], []
    for i in range(n):
        p = np.zeros((40, 30))
        for _ in range(rng.integers(0, 5)):
            y, x, r = rng.integers(3, 37), rng.integers(3, 27), rng.integers(1, 4)
            p[y - r : y + r, x - r : x + r] = rng.uniform(0.2, 1.0)
        p = np.clip(p + rng.uniform(0, 0.25, p.shape), 0, 1)
        is_patient = i % 3 != 0
        lab = (p > 0.55) if is_patient else np.zeros_like(p, bool)
        if is_patient:
            lab[0:2, 0:2] = True  # a lesion the model never sees
        probs.append(p)
        labels.append(lab)
        patient.append(is_patient)
    return probs, labels, patient


def _by_hand(p: np.ndarray, t: float, min_px: int, min_peak: float) -> np.ndarray:
    mask = to_mask(p, t, min_px)
    comp, n = label_components(mask)
    for k in range(1, n + 1):
        if p[comp == k].max() < min_peak:
            mask[comp == k] = False
    return mask


@pytest.mark.parametrize(
    ("t", "min_px", "min_peak"), [(0.3, 0, 0.0), (0.4, 10, 0.7), (0.5, 25, 0.9)]
)
def test_tabulated_scores_match_masks_scored_one_by_one(
    t: float, min_px: int, min_peak: float
) -> None:
    probs, labels, patient = _maps(12, 0)
    tables = oof_tuning.ComponentTables(probs, labels, patient, thresholds=[t])
    d, clean = tables.score(t, min_px, min_peak)
    masks = [_by_hand(p, t, min_px, min_peak) for p in probs]
    want_dice = np.mean(
        [dice(m, lab) for m, lab, pt in zip(masks, labels, patient, strict=True) if pt]
    )
    want_clean = np.mean([not m.any() for m, pt in zip(masks, patient, strict=True) if not pt])
    assert d == pytest.approx(want_dice)
    assert clean == pytest.approx(want_clean)


def test_choose_respects_the_clean_controls_floor_and_frontier_is_monotone() -> None:
    probs, labels, patient = _maps(30, 1)
    tables = oof_tuning.ComponentTables(probs, labels, patient)
    settings = oof_tuning.grid(tables, flip_tta=False)
    assert all(s.min_peak == 0 or s.min_peak > s.threshold for s in settings)
    best = oof_tuning.choose(settings)
    assert best.dice >= max(s.dice for s in settings) - 0.01
    exact = oof_tuning.choose(settings, dice_tolerance=0.0)
    assert exact.dice == max(s.dice for s in settings)
    strict = oof_tuning.choose(settings, min_clean=0.9)
    assert strict.controls_clean_fraction >= 0.9 or not any(
        s.controls_clean_fraction >= 0.9 for s in settings
    )
    front = oof_tuning.frontier(settings)
    cleans = [s.controls_clean_fraction for s in front]
    dices = [s.dice for s in front]
    assert cleans == sorted(cleans, reverse=True)
    assert dices == sorted(dices)


def test_crossfit_scores_each_fold_with_a_choice_made_without_it() -> None:
    probs, labels, patient = _maps(30, 2)
    tables = oof_tuning.ComponentTables(probs, labels, patient)
    folds = [i % 3 for i in range(30)]
    out = oof_tuning.crossfit(tables, None, folds)
    assert [c["fold"] for c in out["per_fold"]] == [0, 1, 2]  # type: ignore[index]
    # recompute fold 1 by hand from its own choice
    c = out["per_fold"][1]  # type: ignore[index]
    held = np.array(folds) == 1
    d, _ = tables.per_study(c["threshold"], c["min_component_px"], c["min_peak"])
    recomputed = oof_tuning.choose(oof_tuning.grid(tables, False, ~held))
    assert (recomputed.threshold, recomputed.min_peak) == (c["threshold"], c["min_peak"])
    assert 0.0 <= float(out["dice"]) <= 1.0
    assert np.isfinite(d[held & np.array(patient)]).all()


def test_flip_tta_must_buy_more_than_the_tolerance() -> None:
    plain = Setting(0.3, 25, False, 0.690, 0.72, min_peak=0.9)
    tta = Setting(0.3, 0, True, 0.695, 0.76, min_peak=0.9)
    assert oof_tuning.choose([plain, tta]) == plain
    assert oof_tuning.choose([plain, tta], dice_tolerance=0.001) == tta
    # the clean-controls floor comes first
    low = Setting(0.3, 0, False, 0.70, 0.5)
    assert oof_tuning.choose([low, plain], min_clean=0.7) == plain


def test_two_tier_settings_and_lesion_recall_on_hand_made_maps() -> None:
    from model.training.comparison import paired_bootstrap

    # a patient with a large lesion (seen faintly) and a small one (seen very brightly);
    # a control with a small, moderately bright false positive
    label = np.zeros((40, 40), bool)
    label[2:14, 2:14] = True  # 144 px
    label[30:38, 30:38] = True  # 64 px
    patient = np.zeros((40, 40), np.float32)
    patient[2:14, 2:14] = 0.65
    patient[32:36, 32:36] = 1.0  # 16 px at the top of the uint8 scale
    control = np.zeros((40, 40), np.float32)
    control[10:14, 10:14] = 0.9  # 16 px
    tables = oof_tuning.ComponentTables(
        [patient, control], [label, np.zeros_like(label)], [True, False]
    )
    assert tables.n_lesions == 2
    # one tier at 100 px keeps the large lesion only; the small bright one needs tier two
    assert tables.lesion_recall(0.5, 100, 0.6) == (0.5, 0.0)
    assert tables.lesion_recall(0.5, 100, 0.6, 10, 1.0) == (1.0, 0.0)
    assert tables.lesion_recall(0.5, 10, 0.6) == (1.0, 1.0)  # and the control's FP
    dice_two, clean_two = tables.score(0.5, 100, 0.6, None, 10, 1.0)
    assert clean_two == 1.0
    assert dice_two == pytest.approx(2 * (144 + 16) / (144 + 16 + 208))
    settings = oof_tuning.grid(tables, False, two_tier=True)
    assert any(s.small_peak == 1.0 and s.small_px == 10 for s in settings)
    assert all(s.small_peak == 0 or s.small_peak > max(s.min_peak, s.threshold) for s in settings)
    best = oof_tuning.choose(settings, min_clean=1.0)
    assert best.controls_clean_fraction == 1.0
    assert best.dice == pytest.approx(dice_two)
    # the paired comparison of two arms' per-study results
    out = paired_bootstrap(np.array([0.5, 0.6]), np.array([0.7, 0.6]), np.ones(3), np.ones(3), 200)
    assert out["delta_dice"] == pytest.approx(0.1)
    assert out["patients_better"] == 1
    assert out["patients_worse"] == 0
    lo, hi = out["delta_dice_ci95"]
    assert 0.0 <= lo <= 0.1 <= hi <= 0.2
    assert out["delta_clean"] == 0.0
