"""Segmentation metrics: the competition Dice and per-study numbers for the service."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from model.lesions import BODY_LEVEL
from model.postprocessing import component_sizes


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Sørensen-Dice of two binary masks, 2·TP / (2·TP + FP + FN).

    Both empty scores 1.0 (nothing to find, nothing found); the competition only averages
    over patients, whose labels are never empty, so that case does not enter its score.
    """
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    tp = int(np.count_nonzero(p & t))
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    return 1.0 if denom == 0 else 2.0 * tp / denom


def precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[float | None, float | None]:
    """Pixel precision and recall; None where undefined (empty prediction / empty truth)."""
    p = pred.astype(bool, copy=False)
    t = truth.astype(bool, copy=False)
    tp = int(np.count_nonzero(p & t))
    n_pred, n_true = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    return (tp / n_pred if n_pred else None, tp / n_true if n_true else None)


def body_mask(image: np.ndarray, level: float = BODY_LEVEL) -> np.ndarray:
    """Pixels inside the body: any uptake above the near-zero background."""
    return image > level


def study_metrics(
    image: np.ndarray,
    mask: np.ndarray,
    label: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> dict[str, float | int | None]:
    """Numbers the service stores for each segmented study.

    Args:
        image: Network input (H, W) in [0, 1], high uptake high.
        mask: Predicted bool mask (H, W).
        label: Optional expert mask (H, W).
        sizes: The mask's component sizes when they are known (`model/findings.py`);
            labelled here when None.

    Returns:
        tumor_pixels, tumor_fraction (of body pixels), lesions, largest_lesion_px,
        uptake_mean and uptake_max inside the mask (in [0, 1], None when empty), and
        dice, precision, recall (None without a label).
    """
    mask = mask.astype(bool, copy=False)
    tumor_px = int(np.count_nonzero(mask))
    body_px = int(np.count_nonzero(body_mask(image) | mask))
    sizes = component_sizes(mask) if sizes is None else sizes
    inside = image[mask]
    out: dict[str, float | int | None] = {
        "tumor_pixels": tumor_px,
        "tumor_fraction": tumor_px / body_px if body_px else 0.0,
        "lesions": int(sizes.size),
        "largest_lesion_px": int(sizes.max()) if sizes.size else 0,
        "uptake_mean": float(inside.mean()) if tumor_px else None,
        "uptake_max": float(inside.max()) if tumor_px else None,
        "dice": None,
        "precision": None,
        "recall": None,
    }
    if label is not None:
        out["dice"] = dice(mask, label)
        out["precision"], out["recall"] = precision_recall(mask, label)
    return out


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """Mean of the non-None values, None when there are none."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
