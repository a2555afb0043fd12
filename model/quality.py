"""Is this a whole-body MIP-PET in the expected rendering? A plausibility check of a
decoded study before the network sees it.

A wrong file (a label mask, a blank or black image, an inverted rendering, a photo or
a CT slice, a rendering clipped to white) is segmented with confidence all the same, so
it is refused here with the reason. The limits were chosen so that every one of the 508
development images passes with a wide margin (2026-12-06, `tests/model/test_quality.py`
checks them all); the measured ranges are in the comments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.lesions import BODY_LEVEL

#: Fewer distinct 8-bit gray levels than this is a mask or a blank image, not a MIP
#: (development images: 230 to 234).
MIN_GRAY_LEVELS = 16
#: The image's spread (standard deviation) below this is a near-constant image
#: (development: 0.15 to 0.34).
MIN_SPREAD = 0.02
#: The median of the image's outer frame above this (high uptake high) is no white
#: background: an inverted rendering, a photo or a crop (development: 0 in every image).
MAX_BORDER = 0.1
#: The body's share of the image, outside this range, is no whole-body MIP (development:
#: 0.31 to 0.64).
BODY_SHARE = (0.08, 0.92)
#: A larger share of the body at the top of the scale is a clipped rendering
#: (development: 0.01 to 0.24).
MAX_SATURATED = 0.6


@dataclass(frozen=True)
class Measures:
    """What the check reads of an image (network input, high uptake high)."""

    gray_levels: int
    spread: float
    border: float
    body_share: float
    saturated: float


def measure(image: np.ndarray) -> Measures:
    """The check's measures of a decoded study (`model.preprocessing.decode_image`)."""
    levels = int(np.unique(np.rint(image * 255.0).astype(np.uint8)).size)
    frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    body = image > BODY_LEVEL
    inside = image[body]
    saturated = float(np.count_nonzero(inside >= 254.5 / 255.0)) / max(inside.size, 1)
    return Measures(levels, float(image.std()), float(np.median(frame)), float(body.mean()),
                    saturated)  # fmt: skip


def check(image: np.ndarray) -> str | None:
    """Why `image` is not a whole-body MIP-PET in the DM i AI rendering (dark uptake on a
    white background), or None when it looks like one."""
    m = measure(image)
    if m.gray_levels < MIN_GRAY_LEVELS or m.spread < MIN_SPREAD:
        return (
            f"not a MIP-PET image: {m.gray_levels} gray levels (a mask, a label or a blank "
            f"image?); a study has at least {MIN_GRAY_LEVELS}"
        )
    if m.border > MAX_BORDER:
        return (
            "not a MIP-PET in the expected rendering: the image has no white background "
            "(inverted, a photo or a crop?); high uptake must be dark on white"
        )
    low, high = BODY_SHARE
    if not low <= m.body_share <= high:
        return (
            f"not a whole-body MIP: the body covers {m.body_share:.0%} of the image, "
            f"expected {low:.0%} to {high:.0%}"
        )
    if m.saturated > MAX_SATURATED:
        return (
            f"a clipped rendering: {m.saturated:.0%} of the body is at the darkest gray "
            f"(at most {MAX_SATURATED:.0%} expected)"
        )
    return None
