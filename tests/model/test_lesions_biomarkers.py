"""Lesion findings and MIP biomarkers on synthetic masks with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.biomarkers import largest_distance, mip_biomarkers
from model.lesions import BodyExtent, Spacing, body_extent, find_lesions


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 100 x 40 image: body rows 10-89, columns 5-34; two lesions and a speck of noise.

    Lesion A: rows 20-23, columns 10-14 (4 x 5 = 20 px), uptake 0.9 with one pixel 1.0.
    Lesion B: rows 70-71, columns 30-31 (2 x 2 = 4 px), uptake 0.6.
    """
    image = np.zeros((100, 40), np.float32)
    image[10:90, 5:35] = 0.3
    image[0, 0] = 0.5  # a one-pixel speck far from the body: not anatomy
    mask = np.zeros_like(image, dtype=bool)
    mask[20:24, 10:15] = True
    image[20:24, 10:15] = 0.9
    image[21, 12] = 1.0
    mask[70:72, 30:32] = True
    image[70:72, 30:32] = 0.6
    prob = np.where(mask, 0.7, 0.1).astype(np.float32)
    prob[70, 30] = 0.95
    return image, mask, prob


def test_uint8_probabilities_give_the_peaks_through_their_scale() -> None:
    image, mask, prob = _scene()
    quantized = np.round(prob * 255).astype(np.uint8)
    a, b = find_lesions(mask, image, quantized, probability_scale=1 / 255)
    assert a.peak_probability == pytest.approx(round(0.7 * 255) / 255)
    assert b.peak_probability == pytest.approx(round(0.95 * 255) / 255)
    assert type(a.peak_probability) is float


def test_body_extent_ignores_specks_and_keeps_separate_limbs() -> None:
    image, _, _ = _scene()
    assert body_extent(image) == BodyExtent(top=10, bottom=90, left=5, right=35)
    arm = image.copy()
    arm[30:60, 37:39] = 0.3  # an arm apart from the trunk, 60 px: over 1 % of 2,400
    assert body_extent(arm) == BodyExtent(top=10, bottom=90, left=5, right=39)
    assert body_extent(np.zeros((5, 5), np.float32)) is None


def test_lesions_are_measured_largest_first() -> None:
    image, mask, prob = _scene()
    a, b = find_lesions(mask, image, prob, Spacing(2.0, 4.0))
    assert (a.number, a.area_px, b.number, b.area_px) == (1, 20, 2, 4)
    assert (a.centroid_row, a.centroid_col) == (21.5, 12.0)
    assert (b.centroid_row, b.centroid_col) == (70.5, 30.5)
    assert a.bbox == (20, 10, 24, 15)
    assert all(type(v) is int for v in a.bbox)  # plain ints: a database driver stores them
    assert b.bbox == (70, 30, 72, 32)
    # body rows 10..89 (80 rows): A's centre 21.5 + 0.5 - 10 = 12 of 80
    assert a.relative_height == pytest.approx(12 / 80)
    assert b.relative_height == pytest.approx(61 / 80)
    assert a.peak_uptake == pytest.approx(1.0)
    assert a.mean_uptake == pytest.approx((19 * 0.9 + 1.0) / 20)
    assert b.peak_uptake == pytest.approx(0.6)
    assert b.mean_uptake == pytest.approx(0.6)
    assert a.peak_probability == pytest.approx(0.7)
    assert b.peak_probability == pytest.approx(0.95)
    assert a.area_mm2 == pytest.approx(20 * 8.0)
    assert b.area_mm2 == pytest.approx(4 * 8.0)


def test_without_spacing_or_probabilities_those_fields_are_none() -> None:
    image, mask, _ = _scene()
    (a, _b) = find_lesions(mask, image)
    assert a.area_mm2 is None
    assert a.peak_probability is None
    assert find_lesions(np.zeros_like(mask), image) == []
    with pytest.raises(ValueError, match="one shape"):
        find_lesions(mask[:50], image)


def test_corner_touching_pixels_are_one_lesion() -> None:
    image = np.full((10, 10), 0.3, np.float32)
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[3, 3] = True
    (only,) = find_lesions(mask, image)
    assert only.area_px == 2
    assert only.bbox == (2, 2, 4, 4)


def test_biomarkers_match_hand_computed_values() -> None:
    image, mask, prob = _scene()
    spacing = Spacing(2.0, 4.0)
    body = body_extent(image)
    bio = mip_biomarkers(find_lesions(mask, image, prob, spacing, body), body, spacing)
    assert bio.tumor_area_px == 24
    assert bio.lesion_count == 2
    assert bio.tumor_area_cm2 == pytest.approx(24 * 8.0 / 100)
    # centroids (21.5, 12) and (70.5, 30.5): 49 rows and 18.5 columns apart
    assert bio.sdmax_px == pytest.approx(math.hypot(49, 18.5))
    assert bio.sdmax_cm == pytest.approx(math.hypot(49 * 2.0, 18.5 * 4.0) / 10)
    assert bio.sdmax_per_height == pytest.approx(math.hypot(98, 74) / (80 * 2.0))
    assert (bio.body_height_px, bio.body_width_px) == (80, 30)
    assert bio.body_height_cm == pytest.approx(16.0)
    assert bio.body_width_cm == pytest.approx(12.0)


def test_biomarkers_without_spacing_stay_in_pixels() -> None:
    image, mask, _ = _scene()
    body = body_extent(image)
    bio = mip_biomarkers(find_lesions(mask, image), body)
    assert bio.tumor_area_cm2 is None
    assert bio.sdmax_cm is None
    assert bio.body_height_cm is None
    assert bio.sdmax_per_height == pytest.approx(math.hypot(49, 18.5) / 80)


def test_one_lesion_or_none_has_no_dissemination() -> None:
    image, mask, _ = _scene()
    mask[60:, :] = False
    body = body_extent(image)
    one = mip_biomarkers(find_lesions(mask, image), body)
    assert one.lesion_count == 1
    assert one.sdmax_px == 0.0
    assert one.sdmax_per_height == 0.0
    none = mip_biomarkers([], body, Spacing(1.0, 1.0))
    assert (none.tumor_area_px, none.lesion_count, none.sdmax_px) == (0, 0, 0.0)
    assert none.sdmax_cm == 0.0
    assert mip_biomarkers([], None).sdmax_per_height is None


def test_largest_distance_is_the_farthest_pair() -> None:
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [-3.0, 0.0]])
    assert largest_distance(pts) == pytest.approx(math.hypot(6, 4))
    assert largest_distance(pts[:1]) == 0.0


def test_spacing_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Spacing(0.0, 1.0)
