"""Tumor-burden biomarkers of one MIP, after the MIP surrogates of Girum et al. 2022.

Girum KB, Rebaud L, Cottereau AS, et al. "18F-FDG PET maximum-intensity projections and
artificial intelligence: a win-win combination to easily measure prognostic biomarkers
in DLBCL patients." J Nucl Med 2022;63(12):1925-1932, doi:10.2967/jnumed.121.263501.
They replace the total metabolic tumor volume (TMTV) by the tumor area segmented on MIPs
(sTMTV) and the dissemination Dmax by the largest distance between lesions on the MIPs
(sDmax). The paper sums a coronal and a sagittal MIP; a study here is one projection, so
these are its one-view values. `docs/BIOMARKERS.md` gives each definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.lesions import BodyExtent, Lesion, Spacing


@dataclass(frozen=True)
class Biomarkers:
    """One study's MIP biomarkers (None where the input for it is missing).

    Attributes:
        tumor_area_px: Predicted tumor pixels (the sTMTV surrogate).
        tumor_area_cm2: The same in cm² (needs the spacing).
        lesion_count: Predicted lesions (8-connected components).
        sdmax_px: Largest distance between two lesions' centroids, in pixels (0 with
            fewer than two lesions).
        sdmax_cm: The same in cm (needs the spacing).
        sdmax_per_height: sDmax divided by the body's height in the image (in mm when the
            spacing is known, else in pixels); None when no body is found.
        body_height_px: Height of the imaged body's box.
        body_width_px: Width of the imaged body's box.
        body_height_cm: The body's height in cm (needs the spacing).
        body_width_cm: The body's width in cm (needs the spacing).
    """

    tumor_area_px: int
    tumor_area_cm2: float | None
    lesion_count: int
    sdmax_px: float
    sdmax_cm: float | None
    sdmax_per_height: float | None
    body_height_px: int | None
    body_width_px: int | None
    body_height_cm: float | None
    body_width_cm: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def largest_distance(points: np.ndarray) -> float:
    """The largest Euclidean distance between two of the (N, 2) points (0 when N < 2)."""
    if len(points) < 2:
        return 0.0
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def mip_biomarkers(
    lesions: Sequence[Lesion], body: BodyExtent | None, spacing: Spacing | None = None
) -> Biomarkers:
    """The biomarkers of a study from its lesions (`model.lesions.find_lesions`).

    Args:
        lesions: The study's lesions.
        body: The imaged body's box (`model.lesions.body_extent`), None when not found.
        spacing: Pixel spacing, for the values in cm.
    """
    area_px = sum(le.area_px for le in lesions)
    centres = np.array([[le.centroid_row, le.centroid_col] for le in lesions], dtype=np.float64)
    sdmax_px = largest_distance(centres)
    sdmax_mm = None
    if spacing is not None:
        sdmax_mm = largest_distance(
            centres * np.array([spacing.row_mm, spacing.col_mm]) if len(centres) else centres
        )
    per_height = None
    if body is not None and body.height_px > 0:
        per_height = (
            sdmax_mm / (body.height_px * spacing.row_mm)
            if spacing is not None and sdmax_mm is not None
            else sdmax_px / body.height_px
        )
    cm = 0.1
    return Biomarkers(
        tumor_area_px=int(area_px),
        tumor_area_cm2=area_px * spacing.pixel_mm2 * cm * cm if spacing is not None else None,
        lesion_count=len(lesions),
        sdmax_px=sdmax_px,
        sdmax_cm=sdmax_mm * cm if sdmax_mm is not None else None,
        sdmax_per_height=per_height,
        body_height_px=body.height_px if body is not None else None,
        body_width_px=body.width_px if body is not None else None,
        body_height_cm=(
            body.height_px * spacing.row_mm * cm if body is not None and spacing else None
        ),
        body_width_cm=body.width_px * spacing.col_mm * cm if body is not None and spacing else None,
    )
