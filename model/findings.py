"""A study's findings from its prediction: the mask, the metrics, the lesions and the
MIP biomarkers, from one labelling of the mask's components.

The worker (``worker/segmentation.py``) and ``bench/findings.py`` call :func:`find` on
each predicted study; ``model/predictor.py`` gives the levels and probabilities, the
manifest the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.biomarkers import Biomarkers, mip_biomarkers
from model.lesions import Lesion, Spacing, body_extent, measure_lesions
from model.metrics import study_metrics
from model.postprocessing import Rule, components


@dataclass(frozen=True)
class Findings:
    """What one predicted study shows.

    Attributes:
        mask: bool (H, W) tumor mask after the rule.
        metrics: ``model.metrics.study_metrics``'s numbers.
        lesions: The lesions, largest first.
        biomarkers: The MIP biomarkers of those lesions.
    """

    mask: np.ndarray
    metrics: dict[str, Any]
    lesions: list[Lesion]
    biomarkers: Biomarkers


def find(
    image: np.ndarray,
    levels: np.ndarray,
    probabilities: np.ndarray,
    rule: Rule,
    spacing: Spacing | None = None,
    label: np.ndarray | None = None,
    probability_scale: float = 1 / 255,
) -> Findings:
    """The findings of one study.

    Args:
        image: (H, W) network input, high uptake high.
        levels: (H, W) candidates after the threshold: bool, or the predictor's uint8
            levels (higher where the rule's peaks are reached too).
        probabilities: (H, W) tumor probabilities, for each lesion's peak (times
            `probability_scale`: 1/255 for the predictor's uint8 maps).
        rule: The artifact's post-processing (its threshold was applied to `levels`).
        spacing: Pixel spacing, for areas and distances in mm.
        label: The expert mask, for Dice, precision and recall.
    """
    found = components(levels, rule)
    mask = found.mask()
    body = body_extent(image)
    lesions = measure_lesions(found, image, probabilities, spacing, body, probability_scale)
    sizes = np.array([le.area_px for le in lesions], dtype=np.int64)
    metrics = study_metrics(image, mask, label, sizes=sizes)
    return Findings(mask, metrics, lesions, mip_biomarkers(lesions, body, spacing))
