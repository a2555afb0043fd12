"""Training crops biased towards tumors, with MIP-appropriate augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.dataset import Study
from model.preprocessing import resample


@dataclass(frozen=True)
class CropConfig:
    """How training batches are drawn.

    Attributes:
        height: Crop height in network pixels (at the manifest's input scale); at half
            scale 192 px is 384 PNG px, wide enough to see the whole body's width.
        width: Crop width in network pixels.
        p_tumor: Share of crops centred (with jitter) on a tumor pixel.
        p_control: Share of crops from healthy controls; the rest are random patient crops.
        scale: Range of random zoom factors.
        intensity: Range of random intensity gains.
        gamma: Range of random gamma exponents.
        rotation: Largest random in-plane rotation, in degrees (0: none).
        noise: Largest standard deviation of additive Gaussian noise (0: none).
    """

    height: int = 192
    width: int = 192
    p_tumor: float = 0.5
    p_control: float = 0.25
    scale: tuple[float, float] = (0.85, 1.15)
    intensity: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.25)
    rotation: float = 0.0
    noise: float = 0.0


#: Named augmentation strengths for `tumorseg train --augmentation`. "standard" is the
#: released recipe's; "strong" widens zoom, intensity and gamma and adds rotation and
#: noise, against the over-fitting seen after about 2,000 steps (docs/MODEL.md).
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "standard": {},
    "strong": {
        "scale": (0.7, 1.4),
        "intensity": (0.7, 1.3),
        "gamma": (0.7, 1.5),
        "rotation": 15.0,
        "noise": 0.02,
    },
}


def rotated_extent(h: int, w: int, angle: float) -> tuple[int, int]:
    """Height and width of the box that holds an h x w window rotated by `angle` radians."""
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    eps = 1e-9  # cos(pi / 2) is 6e-17, not 0
    return math.ceil(h * c + w * s - eps), math.ceil(h * s + w * c - eps)


def rotate_crop(
    img: np.ndarray, lab: np.ndarray, h: int, w: int, angle: float, out: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The h x w window at the centre of (img, lab), rotated by `angle` radians and
    resampled (bilinear, labels softly) to `out`: (1, H, W) tensors."""
    hb, wb = img.shape
    c, s = math.cos(angle), math.sin(angle)
    theta = torch.tensor(
        [[[c * w / wb, -s * h / wb, 0.0], [s * w / hb, c * h / hb, 0.0]]], dtype=torch.float32
    )
    grid = F.affine_grid(theta, [1, 1, *out], align_corners=False)
    both = torch.from_numpy(np.stack([img, lab]))[:, None]
    res = F.grid_sample(both, grid.expand(2, -1, -1, -1), align_corners=False)
    return res[0], res[1]


class CropSampler:
    """Draws augmented (image, label) crop batches from decoded studies, reproducibly."""

    def __init__(
        self, studies: Sequence[Study], config: CropConfig, seed: int, input_scale: float = 1.0
    ) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        scaled = [
            Study(
                s.name,
                resample(s.image, input_scale),
                resample(s.label.astype(np.float32), input_scale),
                s.is_patient,
            )
            for s in studies
        ]
        self.patients = [s for s in scaled if s.is_patient]
        self.controls = [s for s in scaled if not s.is_patient]
        if not self.patients:
            raise ValueError("training needs at least one patient with a label")
        self.tumor_pixels = [np.argwhere(s.label > 0.5) for s in self.patients]

    def _window(
        self, study: Study, h: int, w: int, center: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut an h x w window, zero-padded where it leaves the image."""
        H, W = study.image.shape
        if center is None:
            y0 = int(self.rng.integers(min(0, H - h), max(0, H - h) + 1))
            x0 = int(self.rng.integers(min(0, W - w), max(0, W - w) + 1))
        else:
            jy, jx = self.rng.integers(-h // 3, h // 3 + 1), self.rng.integers(-w // 3, w // 3 + 1)
            y0, x0 = int(center[0] - h // 2 + jy), int(center[1] - w // 2 + jx)
        img = np.zeros((h, w), dtype=np.float32)
        lab = np.zeros((h, w), dtype=np.float32)
        sy, sx = max(y0, 0), max(x0, 0)
        ey, ex = min(y0 + h, H), min(x0 + w, W)
        if ey > sy and ex > sx:
            img[sy - y0 : ey - y0, sx - x0 : ex - x0] = study.image[sy:ey, sx:ex]
            lab[sy - y0 : ey - y0, sx - x0 : ex - x0] = study.label[sy:ey, sx:ex]
        return img, lab

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        s = float(self.rng.uniform(*c.scale))
        h, w = int(round(c.height * s)), int(round(c.width * s))
        # Without rotation no angle is drawn: the standard stream stays what it was.
        angle = (
            math.radians(float(self.rng.uniform(-c.rotation, c.rotation))) if c.rotation else 0.0
        )
        hb, wb = rotated_extent(h, w, angle) if angle else (h, w)
        u = self.rng.random()
        if u < c.p_tumor:
            k = int(self.rng.integers(len(self.patients)))
            pix = self.tumor_pixels[k]
            center = tuple(pix[int(self.rng.integers(len(pix)))]) if len(pix) else None
            img, lab = self._window(self.patients[k], hb, wb, center)
        elif u < c.p_tumor + c.p_control and self.controls:
            k = int(self.rng.integers(len(self.controls)))
            img, lab = self._window(self.controls[k], hb, wb, None)
        else:
            k = int(self.rng.integers(len(self.patients)))
            img, lab = self._window(self.patients[k], hb, wb, None)
        if self.rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        gain = float(self.rng.uniform(*c.intensity))
        gamma = float(self.rng.uniform(*c.gamma))
        img = np.clip(np.power(np.clip(img, 0.0, 1.0), gamma) * gain, 0.0, 1.0)
        if angle:
            ti, tl = rotate_crop(
                np.ascontiguousarray(img),
                np.ascontiguousarray(lab),
                h,
                w,
                angle,
                (c.height, c.width),
            )
        else:
            ti = torch.from_numpy(np.ascontiguousarray(img))[None, None]
            tl = torch.from_numpy(np.ascontiguousarray(lab))[None, None]
            if (h, w) != (c.height, c.width):
                size = (c.height, c.width)
                ti = F.interpolate(ti, size=size, mode="bilinear", align_corners=False)
                tl = F.interpolate(tl, size=size, mode="bilinear", align_corners=False)
            ti, tl = ti[0], tl[0]
        if c.noise:
            sigma = float(self.rng.uniform(0.0, c.noise))
            noise = self.rng.standard_normal((c.height, c.width), dtype=np.float32) * sigma
            ti = (ti + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        return ti, tl

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A (size, 1, H, W) image batch and its label batch."""
        pairs = [self._one() for _ in range(size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def state(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


class _CropStream(torch.utils.data.IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Endless crop batches from one sampler; each loader worker re-seeds its own copy."""

    def __init__(self, sampler: CropSampler, batch_size: int, seed: int, start_step: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        # The worker holds a forked copy of the sampler: give it its own stream.
        self.sampler.rng = np.random.default_rng([self.seed, worker, self.start_step])
        while True:
            yield self.sampler.batch(self.batch_size)


def parallel_batches(
    sampler: CropSampler,
    batch_size: int,
    workers: int,
    seed: int,
    start_step: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Crop batches drawn by `workers` processes, for accelerators that outrun one core.

    The stream is reproducible for a given (seed, workers, start_step): the loader takes
    batches from its workers in turn, and each worker's generator is seeded from those
    three. It is not the stream of `sampler.batch` (the single-process, resumable path).
    `pin_memory` pins the batches for asynchronous copies to a GPU.
    """
    loader = torch.utils.data.DataLoader(
        _CropStream(sampler, batch_size, seed, start_step),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4,
    )
    return iter(loader)
