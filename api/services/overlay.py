"""Overlays rendered on request from the stored study and mask, with Pillow only.

Most results are never looked at as pictures (nightly runs, research cohorts), so the
worker stores only the mask, and the API draws the overlay when someone asks for it. A
labelled study has a second picture, the comparison, in which hits, false positives and
misses differ in colour.
"""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageFilter, ImageMath

TINT_RGB = (230, 30, 30)
#: Comparison colours (Okabe-Ito, told apart with the common colour-vision deficiencies):
#: predicted and labelled, predicted only, labelled only.
HIT_RGB = (0, 158, 115)
FALSE_POSITIVE_RGB = (230, 159, 0)
MISS_RGB = (86, 180, 233)


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I"):  # 16-bit gray: keep the top 8 bits
        img = img.point(lambda v: v * (1 / 256)).convert("L")
    return img.convert("RGB")


def render_overlay(input_png: bytes, mask_png: bytes, alpha: float = 0.45) -> bytes:
    """The study as uploaded, with the tumor tinted red and outlined.

    Args:
        input_png: The study's PNG as stored at upload.
        mask_png: Its mask in competition format (same size, 0/255).
        alpha: Tint opacity inside the mask.

    Returns:
        RGB PNG bytes of the input's size.

    Raises:
        ValueError: The mask's size differs from the image's.
    """
    rgb = _as_rgb(Image.open(io.BytesIO(input_png)))
    mask = Image.open(io.BytesIO(mask_png)).convert("L")
    if mask.size != rgb.size:
        raise ValueError(f"mask is {mask.size} but the image is {rgb.size}")
    red = Image.new("RGB", rgb.size, TINT_RGB)
    out = Image.composite(Image.blend(rgb, red, alpha), rgb, mask)
    out.paste(red, mask=ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(3))))
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _binary(png: bytes) -> Image.Image:
    """A mask or label PNG as an L image of 0 and 255: white is tumor, and a pixel counts
    when its gray is over half the range, as the worker reads labels for Dice (16-bit and
    colour PNGs included)."""
    img = Image.open(io.BytesIO(png))
    if img.mode.startswith("I"):
        wide = img.convert("I")
        brightest = wide.getextrema()[1]  # one band: (min, max)
        wide_range = isinstance(brightest, int | float) and brightest > 255
        top = 65535 if img.mode.startswith("I;16") or wide_range else 255
        over = ImageMath.lambda_eval(lambda a: a["img"] * 2 > top, img=wide)  # 1 or 0, mode I
        if not isinstance(over, Image.Image):
            raise TypeError(f"unexpected {type(over).__name__} from ImageMath")
        return over.convert("L").point(lambda v: 255 if v else 0)
    return img.convert("L").point(lambda v: 255 if v > 127 else 0)


def render_comparison(
    input_png: bytes, mask_png: bytes, label_png: bytes, alpha: float = 0.6
) -> bytes:
    """The study with the predicted mask compared to its label, one colour per outcome.

    Pixels in both the mask and the label (hits) are tinted :data:`HIT_RGB`, pixels only
    in the mask (false positives) :data:`FALSE_POSITIVE_RGB`, pixels only in the label
    (misses) :data:`MISS_RGB`; the rest is the study as uploaded.

    Args:
        input_png: The study's PNG as stored at upload.
        mask_png: Its predicted mask (same size, 0/255).
        label_png: Its label (same size, white = tumor).
        alpha: Tint opacity; 1 paints the outcome colours as they are.

    Returns:
        RGB PNG bytes of the input's size.

    Raises:
        ValueError: The mask's or the label's size differs from the image's.
    """
    out = _as_rgb(Image.open(io.BytesIO(input_png)))
    mask = _binary(mask_png)
    label = _binary(label_png)
    for name, img in (("mask", mask), ("label", label)):
        if img.size != out.size:
            raise ValueError(f"{name} is {img.size} but the image is {out.size}")
    for region, colour in (
        (ImageChops.multiply(mask, label), HIT_RGB),  # 255 where both are 255
        (ImageChops.subtract(mask, label), FALSE_POSITIVE_RGB),  # clipped at 0
        (ImageChops.subtract(label, mask), MISS_RGB),
    ):
        tint = Image.blend(out, Image.new("RGB", out.size, colour), alpha)
        out = Image.composite(tint, out, region)
    buf = io.BytesIO()
    out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
