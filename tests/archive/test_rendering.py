"""Volume → MIP PNG: the hot spot lands where the training images would show it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archive.rendering import (
    RenderError,
    RenderOptions,
    intensity_to_gray,
    load_dicom_series,
    load_nifti,
    render_study,
    render_volume,
)
from tests.archive.conftest import (
    SPOT_VALUE,
    expected_spot_pixel,
    pet_volume,
    write_dicom_series,
    write_nifti,
)

FIXED = RenderOptions(suv_max=SPOT_VALUE)  # only the spot reaches black


def _spot_centre(gray: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(gray == 0)
    assert rows.size, "nothing rendered black"
    return float(rows.mean()), float(cols.mean())


def test_hot_spot_lands_top_left_for_a_right_sided_spot_near_the_head() -> None:
    volume = pet_volume(seed=1)
    gray = render_volume(volume.data, volume.affine, FIXED)
    # 400 px wide like the DM i AI images; height from the physical aspect (360 x 240 mm)
    assert gray.shape == (600, 400)
    assert gray.dtype == np.uint8
    row, col = np.unravel_index(int(np.argmin(gray)), gray.shape)
    want_row, want_col = expected_spot_pixel()
    assert abs(row - want_row) <= 12
    assert abs(col - want_col) <= 16
    centre = _spot_centre(gray)
    assert abs(centre[0] - want_row) <= 2
    assert abs(centre[1] - want_col) <= 2
    # patient's right on the image's left, head at the top, like the PNGs
    assert col < gray.shape[1] / 2
    assert row < gray.shape[0] / 4
    # background white, body light gray, high uptake dark
    assert gray[0, 0] == 255
    assert gray[-1, -1] == 255
    assert 200 < np.median(gray[gray < 255]) < 255


def test_orientation_is_taken_from_the_affine_not_the_array_order() -> None:
    volume = pet_volume(seed=2)
    flipped = volume.data[::-1, ::-1, :].copy()  # stored left-to-right, posterior-first
    affine = volume.affine.copy()
    affine[0, 0], affine[1, 1] = -affine[0, 0], -affine[1, 1]
    affine[0, 3] = volume.affine[0, 0] * (volume.data.shape[0] - 1)
    affine[1, 3] = volume.affine[1, 1] * (volume.data.shape[1] - 1)
    same = render_volume(flipped, affine, FIXED)
    assert np.array_equal(same, render_volume(volume.data, volume.affine, FIXED))


def test_nifti_and_dicom_of_one_volume_render_alike(tmp_path: Path) -> None:
    volume = pet_volume(seed=3)
    reference = render_volume(volume.data, volume.affine, FIXED)
    nifti = write_nifti(tmp_path / "pet.nii.gz", volume)
    series = sorted(write_dicom_series(tmp_path / "series", volume).iterdir())
    from_nifti = render_volume(*load_nifti(nifti), FIXED)
    from_dicom = render_volume(*load_dicom_series(series), FIXED)
    assert np.array_equal(from_nifti, reference)
    # uint16 storage with a per-slice slope: at most one gray level apart
    assert np.abs(from_dicom.astype(int) - reference).max() <= 1
    rendered = render_study("dicom", series, FIXED)
    png = Image.open(io.BytesIO(rendered.png))
    assert png.mode == "L"
    assert png.size == (400, 600)
    # 60 voxels of 4 mm across 400 columns, 120 slices of 3 mm down 600 rows
    assert rendered.spacing_mm == pytest.approx((120 * 3.0 / 600, 60 * 4.0 / 400))


def test_percentile_clip_blackens_the_top_share_of_body_pixels() -> None:
    values = np.concatenate([np.zeros(1000), np.linspace(0.01, 1.0, 1000)]).reshape(40, 50)
    gray = intensity_to_gray(values, RenderOptions(clip_percentile=95.0))
    body = gray[values > 0]
    assert (gray[values == 0] == 255).all()
    assert 0.04 <= (body == 0).mean() <= 0.06  # ~5 % saturated, as in the DM i AI images
    assert (np.diff(gray.ravel()[1000:].astype(int)) <= 0).all()  # more uptake, darker


def test_unusable_volumes_raise_render_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(RenderError, match="NIfTI"):
        load_nifti(broken)
    with pytest.raises(RenderError, match="no voxel above 0"):
        render_volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(RenderError, match="3D"):
        render_volume(np.ones((4, 4), np.float32), np.eye(4))
    series = write_dicom_series(tmp_path / "ct", pet_volume(seed=4))
    import pydicom

    first = sorted(series.iterdir())[0]
    ds = pydicom.dcmread(str(first))
    ds.Modality = "CT"
    ds.save_as(str(first))
    with pytest.raises(RenderError, match="not a PET series"):
        load_dicom_series(sorted(series.iterdir()))
