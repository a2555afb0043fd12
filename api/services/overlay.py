"""Overlays rendered on request from the stored study and mask, with Pillow only.

Most results are never looked at as pictures (nightly runs, research cohorts), so the
worker stores only the mask, and the API draws the overlay when someone asks for it.
"""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageFilter

TINT_RGB = (230, 30, 30)


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
