"""Choosing the threshold, minimum component size and flip TTA on validation data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.dataset import Study
from model.evaluation import score_study, summarize
from model.postprocessing import to_mask

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.951, 0.05))
MIN_COMPONENTS = (0, 10, 25, 50, 100)


@dataclass(frozen=True)
class Setting:
    """One post-processing choice and its validation score."""

    threshold: float
    min_component_px: int
    flip_tta: bool
    dice: float
    controls_clean_fraction: float | None


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
            )  # type: ignore[arg-type]
    return out


def choose(settings: Sequence[Setting], min_clean: float = 0.85) -> Setting:
    """Best Dice among settings that keep at least `min_clean` of controls clean; if none
    does, the setting with the most clean controls, ties broken by Dice."""
    ok = [s for s in settings if (s.controls_clean_fraction or 0.0) >= min_clean]
    if ok:
        return max(ok, key=lambda s: (s.dice, -s.min_component_px))
    return max(settings, key=lambda s: (s.controls_clean_fraction or 0.0, s.dice))
