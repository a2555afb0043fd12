"""Two recipes compared on their pooled out-of-fold maps, paired study by study.

Each arm is a set of fold runs (`tumorseg ensemble pack` folders) that together hold out
every development study once; runs that held out the same fold are averaged (their
ensemble). For each share of clean controls asked for, each arm's rule is chosen
cross-fitted by fold (every study scored under a rule chosen without its fold), which
reads the Dice-clean-controls frontier at that share honestly. The two arms' per-study
results are then compared pairwise, with a bootstrap over patients and controls for the
interval. Lesion recall (expert lesions of 50 px or more that a kept component touches)
is read at a fixed number of false-positive components per control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.training import oof_tuning
from model.training.ensembling import pooled_maps


@dataclass
class Arm:
    """One recipe's pooled out-of-fold maps, tabulated."""

    name: str
    fold_ids: list[int]
    names: list[str]
    plain: oof_tuning.ComponentTables
    tta: oof_tuning.ComponentTables

    @property
    def is_patient(self) -> np.ndarray:
        return self.plain.is_patient


def load_arm(name: str, folds: Sequence[Path], data: Path) -> Arm:
    """Pool an arm's fold runs (runs of one fold averaged)."""
    _, fold_ids, plain, tta, studies = pooled_maps(folds, data)
    labels = [s.label for s in studies]
    is_patient = [s.is_patient for s in studies]
    return Arm(
        name,
        fold_ids,
        [s.name for s in studies],
        oof_tuning.ComponentTables(plain, labels, is_patient),
        oof_tuning.ComponentTables(tta, labels, is_patient),
    )


def paired_bootstrap(
    a_dice: np.ndarray,
    b_dice: np.ndarray,
    a_clean: np.ndarray,
    b_clean: np.ndarray,
    n: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """B minus A on the same patients (Dice) and controls (clean), with 95 % intervals
    of the mean difference from `n` bootstrap resamples of patients and of controls.

    Args:
        a_dice: Per-patient Dice of arm A.
        b_dice: The same patients' Dice of arm B.
        a_clean: Per-control 1 if A left it clean, else 0.
        b_clean: The same controls under B.
        n: Bootstrap resamples.
        seed: Seed of the resampling.
    """
    rng = np.random.default_rng(seed)
    d = np.asarray(b_dice, float) - np.asarray(a_dice, float)
    c = np.asarray(b_clean, float) - np.asarray(a_clean, float)
    boot_d = d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1) if len(d) else np.zeros(n)
    boot_c = c[rng.integers(0, len(c), (n, len(c)))].mean(axis=1) if len(c) else np.zeros(n)
    return {
        "dice_a": float(np.mean(a_dice)) if len(d) else None,
        "dice_b": float(np.mean(b_dice)) if len(d) else None,
        "delta_dice": float(d.mean()) if len(d) else None,
        "delta_dice_ci95": [float(np.quantile(boot_d, 0.025)), float(np.quantile(boot_d, 0.975))],
        "patients_better": int((d > 0).sum()),
        "patients_worse": int((d < 0).sum()),
        "clean_a": float(np.mean(a_clean)) if len(c) else None,
        "clean_b": float(np.mean(b_clean)) if len(c) else None,
        "delta_clean": float(c.mean()) if len(c) else None,
        "delta_clean_ci95": [float(np.quantile(boot_c, 0.025)), float(np.quantile(boot_c, 0.975))],
    }


def at_floor(arm: Arm, floor: float, two_tier: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """Each study's Dice and predicted pixels under the rule chosen without its fold at
    a floor of `floor` clean controls, and the folds' choices (one fold: its alternate
    halves, as `tune_pooled` does)."""
    ids = arm.fold_ids
    groups = ids if len(set(ids)) > 1 else [i % 2 for i in range(len(ids))]
    return oof_tuning.crossfit_per_study(arm.plain, arm.tta, groups, floor, two_tier)


def frontier_at(arm: Arm, floor: float, two_tier: bool) -> dict[str, Any]:
    """The arm's frontier read at `floor` in sample: the best Dice among rules (plain and
    TTA maps) that keep at least `floor` of the controls clean, and that rule."""
    settings = oof_tuning.grid(arm.plain, False, two_tier=two_tier) + oof_tuning.grid(
        arm.tta, True, two_tier=two_tier
    )
    chosen = oof_tuning.choose(settings, floor)
    return asdict(chosen)


def recall_at_fp(arm: Arm, budget: float, two_tier: bool) -> dict[str, Any]:
    """The best lesion recall among rules (plain and TTA maps) that keep at most
    `budget` false-positive components per control, and that rule."""
    best: dict[str, Any] = {"recall": 0.0, "fp_per_control": 0.0, "rule": None}
    for tables, flip in ((arm.plain, False), (arm.tta, True)):
        for s in oof_tuning.grid(tables, flip, two_tier=two_tier):
            recall, fp = tables.lesion_recall(
                s.threshold, s.min_component_px, s.min_peak, s.small_px, s.small_peak
            )
            if fp <= budget and recall > best["recall"]:
                rule = {k: v for k, v in asdict(s).items() if k not in oof_tuning.SCORES}
                best = {"recall": recall, "fp_per_control": fp, "rule": rule}
    return best


def compare(
    a: Arm,
    b: Arm,
    floors: Sequence[float] = (0.8, 0.85),
    fp_budgets: Sequence[float] = (0.25,),
    two_tier: bool = False,
    n_boot: int = 2000,
    two_tier_b: bool | None = None,
) -> dict[str, Any]:
    """Arm B against arm A at each clean-controls floor (cross-fitted), paired by study,
    and their lesion recall at each false-positive budget. `two_tier` lets the rules of
    both arms have a second tier; `two_tier_b`, when given, B's alone (the same maps
    under two rule families).

    Raises:
        ValueError: The arms do not hold out the same studies.
    """
    if sorted(a.names) != sorted(b.names):
        raise ValueError("the arms hold out different studies: compare runs of one split")
    order = {name: i for i, name in enumerate(a.names)}
    to_a = np.array([order[name] for name in b.names])  # b's i-th study is a's to_a[i]
    pats = a.is_patient
    out: dict[str, Any] = {
        "a": a.name,
        "b": b.name,
        "n_patients": int(pats.sum()),
        "n_controls": int((~pats).sum()),
        "two_tier": two_tier,
        "two_tier_b": two_tier if two_tier_b is None else two_tier_b,
        "floors": {},
        "recall": {},
    }
    tier_b = two_tier if two_tier_b is None else two_tier_b
    for floor in floors:
        da, pa, ca = at_floor(a, floor, two_tier)
        db, pb, cb = at_floor(b, floor, tier_b)
        db_in_a, pb_in_a = np.empty_like(da), np.empty_like(pa)
        db_in_a[to_a], pb_in_a[to_a] = db, pb
        out["floors"][f"{floor:.2f}"] = {
            **paired_bootstrap(
                da[pats], db_in_a[pats], pa[~pats] == 0, pb_in_a[~pats] == 0, n_boot
            ),
            "rules_a": ca,
            "rules_b": cb,
            "in_sample_a": frontier_at(a, floor, two_tier),
            "in_sample_b": frontier_at(b, floor, tier_b),
        }
    for budget in fp_budgets:
        out["recall"][f"{budget:g}"] = {
            "a": recall_at_fp(a, budget, two_tier),
            "b": recall_at_fp(b, budget, tier_b),
        }
    return out
