"""PNG encoding of masks (competition format) and overlays for people to look at."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

TINT_RGB = (230, 30, 30)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a bool mask as the competition's PNG: input size, 0 and 255 only (mode L)."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()


def encode_overlay_png(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> bytes:
    """Render the MIP as radiologists read it (dark = uptake) with the tumor tinted red
    and outlined.

    Args:
        image: Network input (H, W) in [0, 1], high uptake high.
        mask: bool (H, W) predicted tumor.
        alpha: Tint opacity inside the mask.

    Returns:
        RGB PNG bytes.
    """
    gray = ((1.0 - np.clip(image, 0.0, 1.0)) * 255.0).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    tint = np.asarray(TINT_RGB, dtype=np.float32)
    m = mask.astype(bool, copy=False)
    rgb[m] = (1.0 - alpha) * rgb[m] + alpha * tint
    edge = m & ~ndimage.binary_erosion(m)
    rgb[edge] = tint
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
