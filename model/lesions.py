"""Per-lesion findings of a predicted mask: where each lesion is, how big, how bright.

A lesion is one 8-connected component of the mask (as everywhere in the service). Its
position is given in the PNG's pixels (row 0 at the top, the head), and as a relative
height in the imaged body, so that lesions compare across studies of different heights.
Uptake is the network input's scale: the PNG's gray inverted to [0, 1], high uptake high;
a PNG carries no SUV, so uptake is relative within a study. With the pixel spacing of
the study (known for studies rendered from NIfTI or DICOM, or given with a PNG) areas are
also in mm².
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from model.postprocessing import CONNECTIVITY, Components, Rule, components

#: Uptake above which a pixel belongs to the body (the background of a MIP is white, 0
#: once inverted).
BODY_LEVEL = 0.02
#: Body components smaller than this share of the largest are specks, not anatomy.
BODY_MIN_SHARE = 0.01


@dataclass(frozen=True)
class Spacing:
    """Pixel spacing of a study's image in millimetres (rows, columns)."""

    row_mm: float
    col_mm: float

    def __post_init__(self) -> None:
        if not (self.row_mm > 0 and self.col_mm > 0):
            raise ValueError(f"pixel spacing must be positive, got {self.row_mm} x {self.col_mm}")

    @property
    def pixel_mm2(self) -> float:
        return self.row_mm * self.col_mm


@dataclass(frozen=True)
class BodyExtent:
    """The box around the imaged body: rows [top, bottom), columns [left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height_px(self) -> int:
        return self.bottom - self.top

    @property
    def width_px(self) -> int:
        return self.right - self.left


@dataclass(frozen=True)
class Lesion:
    """One predicted lesion.

    Attributes:
        number: 1 for the largest lesion, then by decreasing area (ties: top first).
        area_px: Pixels.
        area_mm2: Area in mm² (None without spacing).
        centroid_row: Centre of mass, row (PNG pixels, from the top).
        centroid_col: Centre of mass, column (PNG pixels, from the left).
        bbox: Bounding box (row0, col0, row1, col1), end exclusive.
        relative_height: Centroid's height in the body box: 0 at its top, 1 at its
            bottom (None when no body is found).
        peak_uptake: Highest uptake inside the lesion, in [0, 1].
        mean_uptake: Mean uptake inside the lesion, in [0, 1].
        peak_probability: The model's highest tumor probability inside it (None when
            the probabilities are not given).
    """

    number: int
    area_px: int
    area_mm2: float | None
    centroid_row: float
    centroid_col: float
    bbox: tuple[int, int, int, int]
    relative_height: float | None
    peak_uptake: float
    mean_uptake: float
    peak_probability: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def body_extent(image: np.ndarray, level: float = BODY_LEVEL) -> BodyExtent | None:
    """The box around the body's pixels, ignoring specks; None for an empty image.

    The body is every 8-connected region of uptake above `level` with at least
    `BODY_MIN_SHARE` of the largest one's pixels, so arms apart from the trunk count and
    isolated noise does not. It is the imaged extent (a scan from skull to thigh gives
    that height), not the patient's stature.
    """
    labels, n = ndimage.label(image > level, structure=CONNECTIVITY)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= max(1, int(np.ceil(sizes.max() * BODY_MIN_SHARE)))
    keep[0] = False
    body = keep[labels]
    rows = np.flatnonzero(body.any(axis=1))
    cols = np.flatnonzero(body.any(axis=0))
    return BodyExtent(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def find_lesions(
    mask: np.ndarray,
    image: np.ndarray,
    probabilities: np.ndarray | None = None,
    spacing: Spacing | None = None,
    body: BodyExtent | None = None,
    probability_scale: float = 1.0,
) -> list[Lesion]:
    """Measure every lesion of a predicted mask (labelled here; `model/findings.py`
    measures the components the post-processing labelled instead).

    Args:
        mask: bool (H, W) predicted mask.
        image: (H, W) uptake in [0, 1], high uptake high (the network input).
        probabilities: Optional (H, W) tumor probabilities for each lesion's peak, of
            any dtype: a lesion's peak is its highest value × `probability_scale` (1/255
            for the predictor's uint8 maps, which then need no float copy).
        spacing: Optional pixel spacing for areas in mm².
        body: The body box for relative heights (`body_extent(image)` when None).

    Returns:
        The lesions, largest first.

    Raises:
        ValueError: The arrays' shapes differ.
    """
    mask = np.asarray(mask, dtype=bool)
    found = components(mask, Rule(0.0))
    return measure_lesions(found, image, probabilities, spacing, body, probability_scale)


def measure_lesions(
    found: Components,
    image: np.ndarray,
    probabilities: np.ndarray | None = None,
    spacing: Spacing | None = None,
    body: BodyExtent | None = None,
    probability_scale: float = 1.0,
) -> list[Lesion]:
    """Measure the kept components of `found` (`model.postprocessing.components`): the
    lesions, largest first. Arguments as `find_lesions`'."""
    shapes = {found.shape, image.shape} | (
        {probabilities.shape} if probabilities is not None else set()
    )
    if len(shapes) != 1:
        raise ValueError(f"mask, image and probabilities must have one shape, got {shapes}")
    box, labels, index = found.box, found.labels, found.kept
    if box is None or index.size == 0:
        return []
    body = body if body is not None else body_extent(image)
    img = image[box].astype(np.float64, copy=False)
    areas = found.sizes[index]
    centroids = ndimage.center_of_mass(np.ones_like(img), labels, index)
    peaks = ndimage.maximum(img, labels, index)
    means = ndimage.mean(img, labels, index)
    prob_peaks = (
        np.asarray(ndimage.maximum(probabilities[box], labels, index), dtype=np.float64)
        * probability_scale
        if probabilities is not None
        else None
    )
    objects = ndimage.find_objects(labels)
    r0, c0 = box[0].start, box[1].start
    measured = []
    for k, label in enumerate(index):
        rows, cols = objects[label - 1]
        cy, cx = centroids[k][0] + r0, centroids[k][1] + c0
        rel = (cy + 0.5 - body.top) / body.height_px if body is not None else None
        measured.append(
            (
                int(areas[k]),
                float(cy),
                float(cx),
                (
                    int(rows.start + r0),
                    int(cols.start + c0),
                    int(rows.stop + r0),
                    int(cols.stop + c0),
                ),
                None if rel is None else float(rel),
                float(peaks[k]),
                float(means[k]),
                None if prob_peaks is None else float(prob_peaks[k]),
            )
        )
    measured.sort(key=lambda f: (-f[0], f[1], f[2]))
    return [
        Lesion(
            number=i + 1,
            area_px=area,
            area_mm2=area * spacing.pixel_mm2 if spacing is not None else None,
            centroid_row=cy,
            centroid_col=cx,
            bbox=bbox,
            relative_height=rel,
            peak_uptake=peak,
            mean_uptake=mean,
            peak_probability=prob,
        )
        for i, (area, cy, cx, bbox, rel, peak, mean, prob) in enumerate(measured)
    ]
