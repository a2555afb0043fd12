import io

import numpy as np
import pytest
from PIL import Image

from api.services.overlay import (
    FALSE_POSITIVE_RGB,
    HIT_RGB,
    MISS_RGB,
    TINT_RGB,
    render_comparison,
    render_overlay,
)


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


def _comparison_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 6x8 study of gray 100; the mask holds columns 1-4 of rows 1-2, the label columns
    3-6: columns 1-2 are false positives, 3-4 hits, 5-6 misses."""
    gray = np.full((6, 8), 100, np.uint8)
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:5] = 255
    label = np.zeros((6, 8), np.uint8)
    label[1:3, 3:7] = 255
    return gray, mask, label


def test_comparison_paints_hits_false_positives_and_misses_in_their_colours() -> None:
    gray, mask, label = _comparison_case()
    out = np.asarray(
        Image.open(io.BytesIO(render_comparison(png(gray), png(mask), png(label), alpha=1.0)))
    )
    assert out.shape == (6, 8, 3)
    expected = np.full((6, 8, 3), 100, np.uint8)
    expected[1:3, 1:3] = FALSE_POSITIVE_RGB
    expected[1:3, 3:5] = HIT_RGB
    expected[1:3, 5:7] = MISS_RGB
    np.testing.assert_array_equal(out, expected)
    assert len({HIT_RGB, FALSE_POSITIVE_RGB, MISS_RGB, TINT_RGB}) == 4


def test_comparison_blends_the_colours_over_the_study() -> None:
    gray, mask, label = _comparison_case()
    out = np.asarray(Image.open(io.BytesIO(render_comparison(png(gray), png(mask), png(label)))))
    for (row, col), colour in (((1, 1), FALSE_POSITIVE_RGB), ((2, 4), HIT_RGB), ((1, 6), MISS_RGB)):
        want = 100 * 0.4 + np.asarray(colour, np.float64) * 0.6
        np.testing.assert_allclose(out[row, col], want, atol=1)  # Pillow's blend truncates
    assert (out[0] == 100).all()  # outside mask and label: the study unchanged
    assert (out[:, 0] == 100).all()


def test_comparison_reads_16bit_and_colour_labels_as_the_worker_does() -> None:
    gray, mask, label = _comparison_case()
    label16 = label.astype(np.uint16) * 257  # white is 65535
    label_rgb = np.stack([label] * 3, axis=-1)
    want = render_comparison(png(gray), png(mask), png(label), alpha=1.0)
    for other in (label16, label_rgb):
        got = render_comparison(png(gray), png(mask), png(other), alpha=1.0)
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(got))), np.asarray(Image.open(io.BytesIO(want)))
        )


def test_comparison_refuses_a_label_of_another_size() -> None:
    gray, mask, _ = _comparison_case()
    with pytest.raises(ValueError, match=r"label is \(8, 4\)"):
        render_comparison(png(gray), png(mask), png(np.zeros((4, 8), np.uint8)))
