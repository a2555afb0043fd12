"""Turning probabilities into a mask: threshold, then drop tiny components."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity: lesions touching at a corner are one lesion.
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label connected tumor regions (8-connected).

    Returns:
        (labels array, number of components).
    """
    labels, n = ndimage.label(mask, structure=CONNECTIVITY)
    return labels, int(n)


def remove_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop connected components smaller than `min_px` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    labels, n = label_components(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def to_mask(prob: np.ndarray, threshold: float, min_component_px: int = 0) -> np.ndarray:
    """Binary mask from a probability map.

    Args:
        prob: (H, W) probabilities.
        threshold: Pixels with probability > threshold are tumor.
        min_component_px: Components smaller than this are removed (0 = keep all).

    Returns:
        bool (H, W) mask.
    """
    return remove_small_components(prob > threshold, min_component_px)
