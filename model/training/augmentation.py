"""Probabilistic augmentation of whole-image batches, on the batch's own device.

Each transform fires per image with its own probability (the nnU-Net habit), so most
images see a few transforms and some none. The spatial ones (left-right flip, rotation,
scale) are one affine map per image through `affine_grid` / `grid_sample`, applied to
the image and its soft label alike; the intensity ones (gamma, brightness, contrast,
noise, blur, low resolution) touch the image only. No vertical flips: in every MIP the
head is at the top. Parameters come from a seeded CPU generator, so a run is
reproducible for its seed on a given device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Per-image probabilities and ranges of each transform."""

    p_flip: float = 0.5
    p_rotate: float = 0.2
    rotation_deg: float = 15.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_noise: float = 0.1
    noise_sigma: float = 0.03
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_lowres: float = 0.25
    lowres: tuple[float, float] = (1.0, 2.0)


#: No augmentation at all (tests; a baseline).
NONE = Augmentation(0, 0, 0, 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, 0, 0, (1, 1), 0, (1, 1))


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _fires(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def spatial(
    x: torch.Tensor, y: torch.Tensor, aug: Augmentation, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, rotate and scale each image of (B, 1, H, W) `x` and its label `y` alike."""
    n, _, h, w = x.shape
    flip = torch.where(_fires(gen, n, aug.p_flip), -1.0, 1.0)
    angle = torch.where(
        _fires(gen, n, aug.p_rotate),
        _uniform(gen, n, -aug.rotation_deg, aug.rotation_deg) * math.pi / 180.0,
        torch.zeros(n),
    )
    zoom = torch.where(_fires(gen, n, aug.p_scale), _uniform(gen, n, *aug.scale), torch.ones(n))
    identity = (flip == 1.0) & (angle == 0.0) & (zoom == 1.0)
    if bool(identity.all()):
        return x, y
    # Output pixel -> input pixel in normalised coordinates; the aspect ratio is kept
    # by working in pixel units (w / h) for the rotation.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h * flip
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta.to(x.device), [n, 1, h, w], align_corners=False)
    both = F.grid_sample(torch.cat([x, y], dim=1), grid, align_corners=False)
    keep = identity.to(x.device)[:, None, None, None]
    both = torch.where(keep, torch.cat([x, y], dim=1), both)
    return both[:, :1], both[:, 1:]


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    out = F.conv2d(F.pad(img[None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return out[0]


def intensity(x: torch.Tensor, aug: Augmentation, gen: torch.Generator) -> torch.Tensor:
    """Gamma, brightness, contrast, noise, blur and low resolution on (B, 1, H, W) `x`."""
    n = x.shape[0]
    dev = x.device

    def col(v: torch.Tensor) -> torch.Tensor:
        return v.to(dev)[:, None, None, None]

    gamma = torch.where(_fires(gen, n, aug.p_gamma), _uniform(gen, n, *aug.gamma), torch.ones(n))
    x = x.clamp(0.0, 1.0).pow(col(gamma))
    gain = torch.where(
        _fires(gen, n, aug.p_brightness), _uniform(gen, n, *aug.brightness), torch.ones(n)
    )
    x = x * col(gain)
    c = torch.where(_fires(gen, n, aug.p_contrast), _uniform(gen, n, *aug.contrast), torch.ones(n))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * col(c) + mean
    sigma = torch.where(
        _fires(gen, n, aug.p_noise), _uniform(gen, n, 0.0, aug.noise_sigma), torch.zeros(n)
    )
    if bool((sigma > 0).any()):
        noise = torch.randn(x.shape, generator=gen).to(dev)
        x = x + noise * col(sigma)
    blur = _fires(gen, n, aug.p_blur)
    blur_s = _uniform(gen, n, *aug.blur_sigma)
    low = _fires(gen, n, aug.p_lowres)
    low_f = _uniform(gen, n, *aug.lowres)
    if bool(blur.any()) or bool(low.any()):
        x = x.clone()
        h, w = x.shape[-2:]
        for i in range(n):
            if blur[i]:
                x[i] = _blur(x[i], float(blur_s[i]))
            if low[i] and float(low_f[i]) > 1.0:
                f = float(low_f[i])
                small = F.interpolate(
                    x[i : i + 1], size=(max(1, round(h / f)), max(1, round(w / f))), mode="nearest"
                )
                x[i] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return x.clamp(0.0, 1.0)


def augment(
    x: torch.Tensor, y: torch.Tensor, aug: Augmentation, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial then intensity augmentation of an (image, label) batch."""
    x, y = spatial(x, y, aug, gen)
    return intensity(x, aug, gen), y
