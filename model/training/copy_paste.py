"""Copy-paste lesions in MIP space: teach the network what a lesion next to normal uptake
looks like.

A lesion is cut from a training patient (its expert mask, with the local background
under it removed), scaled to the receiving body's uptake and composited into another
crop with `max`, as a maximum-intensity projection would show a lesion added to the
body: the brighter of the two wins each pixel. Only the pixels the lesion wins are
labelled, so a lesion pasted behind brighter physiological uptake is labelled only
where it shows. Sites are the lesion's usual place in the body (its position relative
to the donor's body box), next to the host's brightest uptake, or anywhere in the body.

Everything here is pure numpy on the network's scale: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.lesions import BODY_LEVEL
from model.postprocessing import CONNECTIVITY

#: Width of the ring around a lesion whose median is its local background, in pixels.
RING_PX = 3


@dataclass(frozen=True)
class PasteConfig:
    """How often and where lesions are pasted into training crops.

    Attributes:
        p_paste: Share of crops (of patients and controls alike) that receive lesions.
        max_lesions: A receiving crop gets 1 to this many lesions.
        p_usual_site: Share of lesions placed at their position in the donor's body.
        p_near_uptake: Share placed next to the host's brightest uptake; the rest go
            anywhere in the host's body.
        uptake_jitter: Range of a random factor on the uptake scaling.
        min_px: Smallest lesion of the bank, in network pixels.
        max_px: Largest lesion of the bank, in network pixels.
    """

    p_paste: float = 0.0
    max_lesions: int = 3
    p_usual_site: float = 0.3
    p_near_uptake: float = 0.4
    uptake_jitter: tuple[float, float] = (0.8, 1.25)
    min_px: int = 4
    max_px: int = 1500


@dataclass(frozen=True)
class Lesion:
    """One lesion of the bank.

    Attributes:
        excess: Uptake above the donor's local background, 0 outside the mask (h, w).
        mask: The expert mask of the lesion in its box (h, w), bool.
        site: The lesion's centre relative to the donor's body box, (row, column) in [0, 1].
        body_uptake: The donor body's median uptake, which the excess is scaled from.
    """

    excess: np.ndarray
    mask: np.ndarray
    site: tuple[float, float]
    body_uptake: float


def body_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), exclusive at the end, of the image's body pixels."""
    body = image > BODY_LEVEL
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def body_uptake(image: np.ndarray) -> float:
    """The median of the body's pixels: the reference that uptake is scaled by."""
    body = image[image > BODY_LEVEL]
    return float(np.median(body)) if body.size else 0.0


def extract_lesions(
    image: np.ndarray, label: np.ndarray, min_px: int = 4, max_px: int = 1500
) -> list[Lesion]:
    """The lesions of one patient: each 8-connected component of `label` with its uptake
    above the median of a ring of non-lesion pixels around it.

    Args:
        image: (H, W) network input, high uptake high.
        label: (H, W) labels (> 0.5 is tumor).
        min_px: Smaller components are left out.
        max_px: Larger components are left out (a bulky mass is no "lesion next to").
    """
    tumor = label > 0.5
    comps, n = ndimage.label(tumor, structure=CONNECTIVITY)
    box = body_box(image)
    uptake = body_uptake(image)
    if n == 0 or box is None or uptake <= 0:
        return []
    top, left, bottom, right = box
    h_img, w_img = image.shape
    out = []
    for k, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None:
            continue
        mask = comps[sl] == k
        size = int(mask.sum())
        if not min_px <= size <= max_px:
            continue
        y0, y1 = max(sl[0].start - RING_PX, 0), min(sl[0].stop + RING_PX, h_img)
        x0, x1 = max(sl[1].start - RING_PX, 0), min(sl[1].stop + RING_PX, w_img)
        ring = ~tumor[y0:y1, x0:x1]
        ring_values = image[y0:y1, x0:x1][ring]
        background = float(np.median(ring_values)) if ring_values.size else 0.0
        excess = np.where(mask, np.clip(image[sl] - background, 0.0, None), 0.0)
        cy = (sl[0].start + sl[0].stop) / 2.0
        cx = (sl[1].start + sl[1].stop) / 2.0
        site = (
            (cy - top) / max(bottom - top, 1),
            (cx - left) / max(right - left, 1),
        )
        out.append(Lesion(excess.astype(np.float32), mask, site, uptake))
    return out


def paste(
    image: np.ndarray,
    label: np.ndarray,
    lesion: Lesion,
    center: tuple[int, int],
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite one lesion into (image, label) with `max`, centred at `center`.

    The lesion's value is the host's local background (the median of the host under the
    lesion's box) plus its excess times `scale`. A pixel of the lesion's mask takes that
    value where it is brighter than the host, and only those pixels are labelled; no
    other pixel changes. Parts that fall outside the image are dropped.

    Returns:
        New (image, label) arrays; the inputs are not modified.
    """
    h, w = lesion.mask.shape
    top, left = center[0] - h // 2, center[1] - w // 2
    H, W = image.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, H), min(left + w, W)
    image, label = image.copy(), label.copy()
    if y1 <= y0 or x1 <= x0:
        return image, label
    host = image[y0:y1, x0:x1]
    mask = lesion.mask[y0 - top : y1 - top, x0 - left : x1 - left]
    excess = lesion.excess[y0 - top : y1 - top, x0 - left : x1 - left]
    value = np.float32(np.median(host)) + excess * np.float32(scale)
    wins = mask & (value > host)
    host[wins] = np.minimum(value[wins], 1.0)
    label[y0:y1, x0:x1][wins] = 1.0
    return image, label


class LesionPaster:
    """Draws lesions from a bank and pastes them into crops, with its own generator (so
    that the crops themselves are drawn as without pasting, for paired comparisons).

    Args:
        donors: (image, label) pairs of training patients at the network's scale.
        config: Probabilities and ranges.
        seed: Seed of the paster's own generator.
    """

    def __init__(
        self,
        donors: Sequence[tuple[np.ndarray, np.ndarray]],
        config: PasteConfig,
        seed: int,
    ) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, 0x9A57E])
        self.bank = [
            lesion
            for image, label in donors
            for lesion in extract_lesions(image, label, config.min_px, config.max_px)
        ]

    def _site(
        self,
        lesion: Lesion,
        window: np.ndarray,
        host_box: tuple[int, int, int, int] | None,
        offset: tuple[int, int],
        bright: np.ndarray,
    ) -> tuple[int, int] | None:
        """A centre in window coordinates, or None when the chosen kind has no site in
        this window."""
        c, rng = self.config, self.rng
        u = rng.random()
        h, w = window.shape
        if u < c.p_usual_site and host_box is not None:
            top, left, bottom, right = host_box
            y = top + lesion.site[0] * (bottom - top) - offset[0]
            x = left + lesion.site[1] * (right - left) - offset[1]
            yx = (int(round(y)), int(round(x)))
        elif u < c.p_usual_site + c.p_near_uptake and len(bright):
            by, bx = bright[int(rng.integers(len(bright)))] - np.asarray(offset)
            radius = max(lesion.mask.shape) / 2.0 + float(rng.uniform(1.0, 6.0))
            angle = float(rng.uniform(0.0, 2.0 * np.pi))
            yx = (int(round(by + radius * np.sin(angle))), int(round(bx + radius * np.cos(angle))))
        else:
            body = np.argwhere(window > BODY_LEVEL)
            if not len(body):
                return None
            yx = tuple(int(v) for v in body[int(rng.integers(len(body)))])  # type: ignore[assignment]
        if not (0 <= yx[0] < h and 0 <= yx[1] < w):
            return None
        return yx

    def __call__(
        self,
        window: np.ndarray,
        label: np.ndarray,
        host_uptake: float,
        host_box: tuple[int, int, int, int] | None,
        offset: tuple[int, int],
        bright: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maybe paste lesions into one crop window.

        Args:
            window: The crop's image (h, w), before augmentation.
            label: Its label.
            host_uptake: The host study's `body_uptake`.
            host_box: The host study's `body_box`, in study coordinates.
            offset: The window's top-left corner in study coordinates.
            bright: (N, 2) study coordinates of the host's brightest uptake.
        """
        c, rng = self.config, self.rng
        if not self.bank or rng.random() >= c.p_paste:
            return window, label
        for _ in range(int(rng.integers(1, c.max_lesions + 1))):
            lesion = self.bank[int(rng.integers(len(self.bank)))]
            if rng.random() < 0.5:
                lesion = Lesion(
                    lesion.excess[:, ::-1], lesion.mask[:, ::-1], lesion.site, lesion.body_uptake
                )
            center = self._site(lesion, window, host_box, offset, bright)
            if center is None:
                continue
            scale = host_uptake / lesion.body_uptake * float(rng.uniform(*c.uptake_jitter))
            window, label = paste(window, label, lesion, center, scale)
        return window, label

    def state(self) -> dict[str, object]:
        return dict(self.rng.bit_generator.state)

    def restore(self, state: dict[str, object]) -> None:
        self.rng.bit_generator.state = state
