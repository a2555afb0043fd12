import io

import numpy as np
import pytest
from PIL import Image

from api.services.overlay import TINT_RGB, render_overlay


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_overlay_tints_and_outlines_only_the_mask() -> None:
    gray = np.full((20, 30), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 255
    out = np.asarray(Image.open(io.BytesIO(render_overlay(png(gray), png(mask)))))
    assert out.shape == (20, 30, 3)
    assert (out[0, 0] == 200).all()  # outside: the study unchanged
    assert tuple(out[5, 10]) == TINT_RGB  # the outline
    inside = out[10, 15]
    assert inside[0] > inside[1]
    assert inside[0] > inside[2]


def test_overlay_of_a_16bit_study() -> None:
    gray16 = np.full((8, 8), 65535, np.uint16)
    out = Image.open(io.BytesIO(render_overlay(png(gray16), png(np.zeros((8, 8), np.uint8)))))
    assert out.mode == "RGB"
    assert np.asarray(out).min() == 255


def test_overlay_refuses_a_mask_of_another_size() -> None:
    with pytest.raises(ValueError, match="mask is"):
        render_overlay(png(np.zeros((8, 8), np.uint8)), png(np.zeros((4, 8), np.uint8)))
