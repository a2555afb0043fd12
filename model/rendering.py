"""PNG encoding of masks in the competition format (overlays are drawn by the API)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a bool mask as the competition's PNG: input size, 0 and 255 only (mode L)."""
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()
