"""Hard negatives: control crops centred on the brightest physiological uptake.

A random crop of a healthy control mostly shows uniform tissue, which the network
learns to leave clean within a few hundred steps. What it confuses with tumor is bright
normal uptake (brain, heart, kidneys, bladder, bowel, brown fat), so most control crops
are centred on one of the body's brightest pixels instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.lesions import BODY_LEVEL


@dataclass(frozen=True)
class HardNegativeConfig:
    """Attributes:
    p_bright: Share of control crops centred on bright uptake (0: all random).
    percentile: Pixels of the body above this percentile of its values are bright.
    """

    p_bright: float = 0.0
    percentile: float = 99.0


def bright_pixels(
    image: np.ndarray, percentile: float = 99.0, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(N, 2) coordinates of the body's pixels above its `percentile`, outside `exclude`
    (a patient's tumor, so that only physiological uptake is left).

    Args:
        image: (H, W) network input, high uptake high.
        percentile: Of the body's pixel values.
        exclude: Optional bool (H, W) mask of pixels that are never bright.
    """
    body = image > BODY_LEVEL
    if not body.any():
        return np.zeros((0, 2), dtype=np.int64)
    level = np.percentile(image[body], percentile)
    bright = body & (image > level)
    if not bright.any():  # a saturated top: the pixels at the level are the brightest
        bright = body & (image >= level)
    if exclude is not None:
        bright &= ~exclude
    return np.argwhere(bright)
