"""PNG files without torch: the one check of a study or label PNG, and the mask PNG.

The API and the archive check uploads with `validate_png`, which reads every chunk and
its CRC but does not inflate the pixels (a full decode there cost 3.5 ms a study, as much
again as the worker's own). The worker decodes with `read_png`
(`model.preprocessing.decode_image`), which applies the same rules and inflates, so what
the API accepts the worker can decode; a stream that passes its CRCs yet does not inflate
fails that one study in the worker, with the decoder's message.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG, with its CRC

#: What Pillow's PNG reader raises on malformed chunks (IndexError: no image data).
_CORRUPT = (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what a study may be.

    Attributes:
        max_side: Largest accepted width or height in pixels.
        max_pixels: Largest accepted width x height (guards against decompression bombs).
        min_side: Smallest accepted width or height.
    """

    max_side: int = 4096
    max_pixels: int = 8_000_000
    min_side: int = 16


class InvalidImage(ValueError):
    """Bytes that are not a usable PNG; the message names the file and says why.

    Attributes:
        too_large: Refused for its size (the API answers 413 for these, else 422).
    """

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def validate_png(data: bytes, what: str, limits: ImageLimits) -> tuple[int, int]:
    """Check that `data` is a complete PNG with intact chunks within `limits`, without
    inflating its pixels.

    Args:
        data: File bytes.
        what: How to name the file in messages, e.g. `"patient_001.png"`.
        limits: Size bounds.

    Returns:
        Its (height, width).

    Raises:
        InvalidImage: With a message naming the file and the problem.
    """
    img = _read(data, what, limits, inflate=False)
    return img.height, img.width


def read_png(data: bytes, what: str, limits: ImageLimits) -> Image.Image:
    """`validate_png`, and inflate the pixels.

    Returns:
        The loaded image.

    Raises:
        InvalidImage: With a message naming the file and the problem.
    """
    return _read(data, what, limits, inflate=True)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a bool mask as the competition's PNG: input size, 0 and 255 only (mode L)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype("uint8") * 255).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()


def _read(data: bytes, what: str, limits: ImageLimits, inflate: bool) -> Image.Image:
    if not data:
        raise InvalidImage(f"{what} is empty (0 bytes)")
    if not data.startswith(PNG_MAGIC):
        raise InvalidImage(f"{what} is not a PNG image (wrong magic bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG"])
            _check_size(img.width, img.height, what, limits)
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise InvalidImage(f"{what} is an animated PNG ({frames} frames)")
            if inflate:
                img.load()  # Pillow checks chunk CRCs while it reads
            else:
                img.verify()  # walks every chunk and checks its CRC
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"{what} is a decompression bomb: {exc}", too_large=True) from exc
    except UnidentifiedImageError as exc:  # its message holds a BytesIO repr, not a reason
        raise InvalidImage(f"{what} is a corrupt PNG: Pillow cannot read its header") from exc
    except _CORRUPT as exc:
        reason = str(exc) or type(exc).__name__
        raise InvalidImage(f"{what} is a corrupt or truncated PNG: {reason}") from exc
    if PNG_IEND not in data[-1024:]:  # decodable image data but the end of the file is cut
        raise InvalidImage(f"{what} is a corrupt or truncated PNG: no IEND chunk at the end")
    return img


def _check_size(width: int, height: int, what: str, limits: ImageLimits) -> None:
    if width == 0 or height == 0:
        raise InvalidImage(f"{what} has zero size ({width}x{height})")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise InvalidImage(
            f"{what} is {width}x{height} pixels, over the limit of {limits.max_side} px per "
            f"side and {limits.max_pixels} px in all (decompression bomb guard)",
            too_large=True,
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(
            f"{what} is {width}x{height} pixels, under the minimum of {limits.min_side} px per side"
        )
