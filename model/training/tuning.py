"""Choosing the threshold, minimum component size and flip TTA on validation data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.dataset import Study
from model.evaluation import score_study, summarize
from model.postprocessing import to_mask

#: From 0.05: in the GPU run every validation check chose the lowest threshold of the old
#: 0.30 floor, so later, more conservative checkpoints were under-scored.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
MIN_COMPONENTS = (0, 10, 25, 50, 100)


@dataclass(frozen=True)
class Setting:
    """One post-processing choice and its validation score."""

    threshold: float
    min_component_px: int
    flip_tta: bool
    dice: float
    controls_clean_fraction: float | None
    #: The peak rule (`model/training/oof_tuning.py`); 0 means none.
    min_peak: float = 0.0
    #: The second tier (`model.postprocessing.Rule`): small components kept when their
    #: peak reaches `small_peak`; 0 means none.
    small_px: int = 0
    small_peak: float = 0.0


def score(
    studies: Sequence[Study], probs: Sequence[np.ndarray], threshold: float, min_px: int
) -> dict[str, float | int | None]:
    """Competition summary of one post-processing setting."""
    return summarize(
        [
            score_study(s.name, to_mask(p, threshold, min_px), s.label, s.is_patient)
            for s, p in zip(studies, probs, strict=True)
        ]
    )


def grid(studies: Sequence[Study], probs: Sequence[np.ndarray], flip_tta: bool) -> list[Setting]:
    """Score every (threshold, min component) pair."""
    out = []
    for t in THRESHOLDS:
        for m in MIN_COMPONENTS:
            r = score(studies, probs, t, m)
            out.append(
                Setting(t, m, flip_tta, float(r["dice"] or 0.0), r["controls_clean_fraction"])
            )
    return out


def choose(settings: Sequence[Setting], dice_tolerance: float = 0.01) -> Setting:
    """The competition comes first: the best patient Dice. Among settings within
    `dice_tolerance` of it, the cheapest (no flip TTA: its second forward pass doubles the
    cost of inference), then the one with the most clean controls, then the simplest
    (smallest minimum component, lowest threshold).

    Post-processing is thus kept only where validation shows it does not cost Dice (or
    costs less than the tolerance while sparing healthy controls), and TTA only where it
    buys more than the tolerance.
    """
    best = max(s.dice for s in settings)
    near = [s for s in settings if s.dice >= best - dice_tolerance]
    return max(
        near,
        key=lambda s: (
            -int(s.flip_tta),
            s.controls_clean_fraction or 0.0,
            -int(s.small_peak > 0),
            -s.min_peak,
            -s.min_component_px,
            -s.threshold,
        ),
    )


def crossfit(val: Sequence[Study], plain: Sequence[np.ndarray], tta: Sequence[np.ndarray]) -> float:
    """Tune on one half of the validation studies, score on the other, and average: an
    estimate of the Dice without the optimism of tuning and scoring on the same data."""
    halves = [[i for i in range(len(val)) if i % 2 == k] for k in (0, 1)]
    scores = []
    for a, b in ((0, 1), (1, 0)):
        va = [val[i] for i in halves[a]]
        vb = [val[i] for i in halves[b]]
        sa = grid(va, [plain[i] for i in halves[a]], False) + grid(
            va, [tta[i] for i in halves[a]], True
        )
        c = choose(sa)
        pb = [(tta if c.flip_tta else plain)[i] for i in halves[b]]
        scores.append(float(score(vb, pb, c.threshold, c.min_component_px)["dice"] or 0.0))
    return float(np.mean(scores))
