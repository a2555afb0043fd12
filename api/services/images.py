"""PNG validation with Pillow only (the API never imports torch or ``model``).

The rules match ``model.preprocessing.decode_image`` (and every chunk's CRC must hold), so
that what the API accepts the worker can decode; the pixels are not inflated here, so a
stream that passes its CRCs yet does not inflate fails that one study in the worker.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG, with its CRC
MIN_SIDE = 16


class InvalidImage(ValueError):
    """An upload is not a usable PNG; ``status_code`` is 413 for size limits, else 422."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class PngInfo:
    """What validation learnt about a PNG."""

    width: int
    height: int
    mode: str


def validate_png(data: bytes, what: str, max_side: int, max_pixels: int) -> PngInfo:
    """Check that ``data`` is a complete PNG, with intact chunks, within the size limits.

    Args:
        data: File bytes.
        what: How to name the file in messages, e.g. ``"patient_001.png"``.
        max_side: Largest accepted width or height.
        max_pixels: Largest accepted width x height (decompression bombs).

    Returns:
        Size and mode of the image.

    Raises:
        InvalidImage: With a message naming the file and the problem.
    """
    if not data:
        raise InvalidImage(f"{what} is empty (0 bytes)")
    if not data.startswith(PNG_MAGIC):
        raise InvalidImage(f"{what} is not a PNG image (wrong magic bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG"])
            width, height = img.size
            if width == 0 or height == 0:
                raise InvalidImage(f"{what} has zero size ({width}x{height})")
            if max(width, height) > max_side or width * height > max_pixels:
                raise InvalidImage(
                    f"{what} is {width}x{height} pixels, over the limit of {max_side} px per "
                    f"side and {max_pixels} px in all (decompression bomb guard)",
                    status_code=413,
                )
            if min(width, height) < MIN_SIDE:
                raise InvalidImage(
                    f"{what} is {width}x{height} pixels, under the minimum of {MIN_SIDE} px"
                )
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise InvalidImage(f"{what} is an animated PNG ({frames} frames)")
            mode = img.mode
            # Walks every chunk and checks its CRC without inflating the pixels (a full
            # decode here cost 3.5 ms a study, as much again as the worker's own decode).
            # A stream that passes its CRCs but does not inflate fails that study in the
            # worker, with the decoder's message.
            img.verify()
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"{what} is a decompression bomb: {exc}", status_code=413) from exc
    except UnidentifiedImageError as exc:  # its message holds a BytesIO repr, not a reason
        raise InvalidImage(f"{what} is a corrupt PNG: Pillow cannot read its header") from exc
    except (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error) as exc:
        # what Pillow's reader raises on malformed chunks (IndexError: no image data)
        reason = str(exc) or type(exc).__name__
        raise InvalidImage(f"{what} is a corrupt or truncated PNG: {reason}") from exc
    if PNG_IEND not in data[-1024:]:  # decodable image data but the end of the file is cut
        raise InvalidImage(f"{what} is a corrupt or truncated PNG: no IEND chunk at the end")
    return PngInfo(width, height, mode)


def mask_png_to_rgb(mask_png: bytes) -> bytes:
    """Turn a stored L-mode 0/255 mask into the competition's RGB PNG (equal channels)."""
    with Image.open(io.BytesIO(mask_png)) as img:
        rgb = img.convert("L").convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
