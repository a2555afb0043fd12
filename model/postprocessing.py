"""Turning probabilities into a mask: threshold, then the component rules.

A :class:`Rule` is a manifest's post-processing: the threshold, the smallest component
kept, and the peak rule (a component is kept only if it holds a pixel at or above
``min_peak``: hysteresis). A rule may have a second tier for small components: keep
one that is large with a moderate peak, or small with a very high peak.
:func:`components` labels a mask's candidates once and says which the rule keeps; the
mask, the metrics and the lesions of a study all read that one labelling
(``model/findings.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

# 8-connectivity: lesions touching at a corner are one lesion.
CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Rule:
    """A manifest's post-processing.

    Attributes:
        threshold: Pixels with probability above it are candidates.
        min_component_px: Components smaller than this are dropped (0: none).
        min_peak: Components without a pixel that reaches it are dropped; None: no peak
            rule (one at or below the threshold is none either). A pixel reaches a peak
            when its uint8 probability does (`reaches`): rules are chosen on uint8 maps,
            where 1.0 is a saturated pixel, so the cut 1.0 means 254.5/255 and above.
        small_component_px: The second tier: a component dropped by the first two
            conditions is kept all the same when it has this many pixels and one at or
            above `small_peak`.
        small_peak: The second tier's peak; None: no second tier.
    """

    threshold: float
    min_component_px: int = 0
    min_peak: float | None = None
    small_component_px: int = 0
    small_peak: float | None = None

    def __post_init__(self) -> None:
        if self.min_peak is not None and self.min_peak <= self.threshold:
            object.__setattr__(self, "min_peak", None)
        if self.small_peak is not None and self.small_peak <= self.threshold:
            object.__setattr__(self, "small_peak", None)

    @classmethod
    def of(cls, threshold: float, postprocessing: Mapping[str, Any]) -> Rule:
        """The rule of a manifest's ``threshold`` and ``postprocessing`` block."""
        get = postprocessing.get
        return cls(
            float(threshold),
            int(get("min_component_px", 0)),
            float(get("min_peak", 0.0)) or None,
            int(get("small_component_px", 0)),
            float(get("small_peak", 0.0)) or None,
        )

    @property
    def cuts(self) -> tuple[float, ...]:
        """The peaks the levels mark, lowest first: a pixel's level is 1 above the
        threshold plus one for each cut it reaches."""
        return tuple(sorted({p for p in (self.min_peak, self.small_peak) if p is not None}))

    def cut_levels(self) -> tuple[int, ...]:
        """The cuts as uint8 probability levels: round(255 × cut)."""
        return tuple(quantized_cut(c) for c in self.cuts)

    def level(self, peak: float | None) -> int:
        """The level a component's highest pixel must reach for `peak` (1: none)."""
        return 1 if peak is None else 2 + self.cuts.index(peak)


@dataclass(frozen=True)
class Components:
    """A candidate mask's 8-connected components, labelled once inside its tumor box.

    Attributes:
        shape: The image's (H, W).
        box: The candidates' bounding box; None when there is none.
        labels: Component labels inside the box (0: background).
        sizes: Pixels of each label, the background first.
        keep: Which labels the rule keeps (the background never).
    """

    shape: tuple[int, int]
    box: tuple[slice, slice] | None
    labels: np.ndarray
    sizes: np.ndarray
    keep: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """The labels that are kept, in label order."""
        return np.flatnonzero(self.keep)

    def mask(self) -> np.ndarray:
        """The bool mask of the kept components, at the image's size."""
        out = np.zeros(self.shape, dtype=bool)
        if self.box is not None:
            out[self.box] = self.keep[self.labels]
        return out


def components(levels: np.ndarray, rule: Rule) -> Components:
    """Label the candidates once and apply the rule's size and peak conditions.

    Args:
        levels: (H, W) candidates: bool, or the predictor's uint8 levels (1 above the
            threshold, plus one for each of the rule's cuts reached: `levels`).
        rule: The size and peak rules (its threshold was applied already).
    """
    candidates = levels >= 1
    box = tumor_box(candidates)
    if box is None:
        empty = np.zeros((0, 0), dtype=np.int32)
        return Components(levels.shape, None, empty, np.zeros(1, np.int64), np.zeros(1, bool))
    labels, n = label_components(candidates[box])
    sizes = np.bincount(labels.ravel(), minlength=n + 1)

    def reaching(level: int) -> np.ndarray:
        """Which labels hold a pixel at `level` or above."""
        if level <= 1:
            return np.ones(n + 1, dtype=bool)
        out = np.zeros(n + 1, dtype=bool)
        out[np.unique(labels[(levels[box] >= level) & (labels > 0)])] = True
        return out

    keep = (sizes >= max(rule.min_component_px, 1)) & reaching(rule.level(rule.min_peak))
    if rule.small_peak is not None:
        small = sizes >= max(rule.small_component_px, 1)
        keep |= small & reaching(rule.level(rule.small_peak))
    keep[0] = False
    return Components(levels.shape, box, labels, sizes, keep)


def quantized_cut(cut: float) -> int:
    """A peak as the uint8 probability level that reaches it: round(255 × cut)."""
    return int(round(255.0 * cut))


def levels(prob: np.ndarray, rule: Rule) -> np.ndarray:
    """The predictor's uint8 levels of a float probability map: 1 above the threshold,
    plus one for each of the rule's cuts its uint8 probability (round(255 × p)) reaches,
    as on the uint8 maps the rule was chosen on."""
    out = (prob > rule.threshold).astype(np.uint8)
    if rule.cuts:
        q = np.rint(np.clip(prob, 0.0, 1.0) * 255.0)
        for cut in rule.cut_levels():
            out += (q >= cut).astype(np.uint8)
    return out


def tumor_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a mask's pixels (None when it is empty).

    Lesions cover a small part of a whole-body image, so component work is done inside
    this box (labelling the whole image costs several times as much: docs/BENCHMARKS.md,
    post-processing).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label connected tumor regions (8-connected).

    Returns:
        (labels array, number of components).
    """
    labels, n = ndimage.label(mask, structure=CONNECTIVITY)
    return labels, int(n)


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Pixel counts of the mask's connected components (8-connected), in label order."""
    return components(mask, Rule(0.0)).sizes[1:]


def remove_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop connected components smaller than `min_px` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    return components(mask, Rule(0.0, min_px)).mask()


def to_mask(
    prob: np.ndarray, threshold: float, min_component_px: int = 0, min_peak: float = 0.0
) -> np.ndarray:
    """Binary mask from a probability map.

    Args:
        prob: (H, W) probabilities.
        threshold: Pixels with probability > threshold are tumor.
        min_component_px: Components smaller than this are removed (0 = keep all).
        min_peak: Components whose highest probability is below this are removed (the
            peak rule; at or below `threshold` it removes nothing).

    Returns:
        bool (H, W) mask.
    """
    rule = Rule(threshold, min_component_px, min_peak or None)
    return components(levels(prob, rule), rule).mask()
