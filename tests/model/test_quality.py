"""The input check: every development image passes, and the wrong files a user sends
are refused with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import quality
from model.dataset import find_studies
from model.preprocessing import decode_image
from tests.conftest import SAMPLE_IMGS, png_bytes

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dmiai2023"
STUDY = (SAMPLE_IMGS / "patient_000.png").read_bytes()


def _decoded(png: bytes) -> np.ndarray:
    return decode_image(png)


def _gray(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def test_every_development_image_passes() -> None:
    if not DATA.is_dir():
        pytest.skip(f"development data not found at {DATA}")
    refused = {}
    for f in find_studies(DATA):
        reason = quality.check(decode_image(f.image.read_bytes()))
        if reason is not None:
            refused[f.name] = reason
    assert refused == {}


def test_a_study_passes_and_a_black_image_does_not() -> None:
    assert quality.check(_decoded(STUDY)) is None
    black = png_bytes(np.zeros((300, 400), np.uint8))  # a label submitted by mistake
    assert "gray levels" in (quality.check(_decoded(black)) or "")


def test_a_label_mask_is_refused() -> None:
    label = np.zeros((300, 400), np.uint8)
    label[100:140, 180:230] = 255
    assert "a mask, a label" in (quality.check(_decoded(png_bytes(label))) or "")


def test_an_inverted_rendering_is_refused() -> None:
    inverted = png_bytes(255 - _gray(STUDY))
    assert "no white background" in (quality.check(_decoded(inverted)) or "")


def test_a_photo_and_a_ct_rendering_are_refused() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    photo = 110 + 60 * np.sin(xx / 40) + 40 * np.cos(yy / 25) + rng.normal(0, 12, (300, 400))
    assert "no white background" in (quality.check(_decoded(png_bytes(
        np.clip(photo, 0, 255).astype(np.uint8)))) or "")  # fmt: skip
    ct = np.zeros((500, 400), np.uint8)  # a CT MIP: black air, gray soft tissue, white bone
    ct[30:480, 110:290] = rng.integers(90, 130, (450, 180))
    ct[60:460, 190:210] = 250  # the spine
    assert "no white background" in (quality.check(_decoded(png_bytes(ct))) or "")


def test_a_clipped_rendering_is_refused() -> None:
    gray = _gray(STUDY).astype(np.float64)
    clipped = np.where(gray < 250, 0, 255).astype(np.uint8)  # the body crushed to black
    clipped[0, 0] = 128  # a third level, so that it is not refused as a mask
    for v in range(3, 40):  # and enough levels to pass as an image
        clipped[0, v] = v * 5
    reason = quality.check(_decoded(png_bytes(clipped))) or ""
    assert "clipped rendering" in reason


def test_a_body_that_fills_the_image_or_is_a_speck_is_refused() -> None:
    rng = np.random.default_rng(1)
    speck = np.full((600, 400), 255, np.uint8)
    speck[280:300, 190:210] = rng.integers(0, 200, (20, 20))
    assert "the body covers" in (quality.check(_decoded(png_bytes(speck))) or "")
    full = np.full((600, 400), 255, np.uint8)
    full[1:-1, 1:-1] = rng.integers(100, 200, (598, 398))
    assert "the body covers" in (quality.check(_decoded(png_bytes(full))) or "")
