"""One preprocessing path shared by training, evaluation and the service.

A study is a whole-body MIP-PET PNG. The DM i AI 2023 images are inverted (high uptake is
dark); the network sees one float channel in [0, 1] where high uptake is high.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model.png import ImageLimits, InvalidImage, read_png

if TYPE_CHECKING:
    import torch


def to_gray(img: Image.Image) -> np.ndarray:
    """Convert a decoded PNG of any supported mode to one float channel in [0, 1].

    Supported: L, LA, RGB, RGBA, P (palette), 1, and 16-bit gray (I;16, I). Colour is
    reduced to ITU-R 601 luminance by Pillow, which is exact for gray replicated in R, G
    and B (the DM i AI images); alpha is dropped.

    Args:
        img: A loaded Pillow image.

    Returns:
        float32 array of shape (H, W), 0 = black, 1 = white.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        clipped: np.ndarray = np.clip(arr / top, 0.0, 1.0)
        return clipped
    if mode not in ("L", "LA", "RGB", "RGBA", "P", "PA", "1"):
        raise InvalidImage(f"unsupported PNG mode {mode!r}")
    if mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)


def normalize(gray: np.ndarray) -> np.ndarray:
    """Invert a [0, 1] grayscale MIP so that high uptake is high (the network's input)."""
    return (1.0 - gray).astype(np.float32, copy=False)


def decode_image(data: bytes, limits: ImageLimits | None = None) -> np.ndarray:
    """Decode PNG bytes into the network's input array.

    Args:
        data: The PNG file's bytes.
        limits: Size limits; defaults to `ImageLimits()`.

    Returns:
        float32 array (H, W) in [0, 1], high uptake high.

    Raises:
        InvalidImage: The bytes are not a usable study image.
    """
    img = read_png(data, "image", limits or ImageLimits())
    return normalize(to_gray(img))


def decode_mask(data: bytes, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a label mask PNG (white = tumor) into a bool array.

    Args:
        data: The PNG file's bytes.
        expected_shape: (H, W) of the matching image; a mismatch is an error.

    Returns:
        bool array (H, W).

    Raises:
        InvalidImage: Not a usable PNG, or its size differs from the image's.
    """
    img = read_png(data, "label", ImageLimits(min_side=1))
    mask = to_gray(img) > 0.5
    if expected_shape is not None and mask.shape != tuple(expected_shape):
        raise InvalidImage(
            f"label is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{expected_shape[1]}x{expected_shape[0]}"
        )
    return mask


def scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The (H, W) that `resample` gives an image of `shape` at `scale`."""
    if scale == 1.0:
        return int(shape[0]), int(shape[1])
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def resample_tensor(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a float (H, W) tensor to `size` on its own device: area averaging when
    shrinking, bilinear when growing. `resample` is this function on the CPU; the
    predictor calls it on the GPU, so the host never resamples there."""
    import torch.nn.functional as F

    if tuple(size) == tuple(t.shape):
        return t
    shrinking = size[0] < t.shape[0]
    out = F.interpolate(
        t[None, None],
        size=size,
        mode="area" if shrinking else "bilinear",
        **({} if shrinking else {"align_corners": False}),
    )
    return out[0, 0]


def resample(arr: np.ndarray, scale: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """Resize a (H, W) float array by `scale` (area averaging when shrinking).

    The network runs at `manifest.preprocessing["input_scale"]` of the PNG's resolution:
    the PNGs are upsampled from PET voxels, so half resolution keeps the information at a
    quarter of the cost. Training and inference both go through this function (or, on
    tensors, `resample_tensor`).

    Args:
        arr: (H, W) array.
        scale: Factor; 1.0 returns `arr` unchanged.
        size: Exact (H, W) output instead of `scale` (used to go back to full size).

    Returns:
        float32 (H', W') array.
    """
    import torch

    size = size or scaled_size(arr.shape, scale)
    if tuple(size) == arr.shape:
        return arr.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return resample_tensor(t, size).numpy()
