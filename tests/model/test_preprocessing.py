import io

import numpy as np
import pytest
from PIL import Image

from model.png import ImageLimits, InvalidImage
from model.preprocessing import (
    decode_image,
    decode_mask,
    resample,
)

GRAY = np.array([[0, 64], [128, 255]] * 8, dtype=np.uint8).repeat(8, axis=1)  # 16x16


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def expected() -> np.ndarray:
    return 1.0 - GRAY.astype(np.float32) / 255.0


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P"])
def test_every_8bit_mode_gives_the_same_inverted_gray(mode: str) -> None:
    img = Image.fromarray(GRAY, "L").convert(mode)
    out = decode_image(png(img))
    assert out.dtype == np.float32
    assert out.shape == GRAY.shape
    np.testing.assert_allclose(out, expected(), atol=1 / 255)


def test_16bit_png_is_scaled_by_65535() -> None:
    arr16 = GRAY.astype(np.uint16) * 257
    out = decode_image(png(Image.fromarray(arr16)))
    np.testing.assert_allclose(out, expected(), atol=1e-4)


def test_high_uptake_is_high() -> None:
    out = decode_image(png(Image.fromarray(GRAY, "L")))
    assert out[GRAY == 0].min() == pytest.approx(1.0)
    assert out[GRAY == 255].max() == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 40, "not a PNG"),
        (png(Image.fromarray(GRAY, "L"))[:60], "corrupt or truncated"),
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        decode_image(data)


def test_oversized_image_is_refused_before_decoding() -> None:
    data = png(Image.new("L", (300, 200)))
    with pytest.raises(InvalidImage, match="over the limit"):
        decode_image(data, ImageLimits(max_side=256))


def test_tiny_image_is_refused() -> None:
    with pytest.raises(InvalidImage, match="under the minimum"):
        decode_image(png(Image.new("L", (1, 1))))


def test_mask_size_mismatch_is_refused() -> None:
    label = png(Image.new("L", (16, 8), 255))
    with pytest.raises(InvalidImage, match="label is 16x8"):
        decode_mask(label, expected_shape=(16, 16))
    assert decode_mask(label).all()


def test_resample_round_trip_keeps_shape_and_range() -> None:
    arr = np.random.default_rng(0).random((51, 40)).astype(np.float32)
    small = resample(arr, 0.5)
    assert small.shape == (26, 20)
    back = resample(small, 1.0, arr.shape)
    assert back.shape == arr.shape
    assert back.min() >= 0.0
    assert back.max() <= 1.0
