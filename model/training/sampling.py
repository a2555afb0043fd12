"""Training crops biased towards tumors, with MIP-appropriate augmentation, lesions
pasted into them (`copy_paste.py`) and control crops on bright uptake
(`hard_negatives.py`)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.dataset import Study
from model.preprocessing import resample
from model.training.copy_paste import LesionPaster, PasteConfig, body_box, body_uptake
from model.training.hard_negatives import HardNegativeConfig, bright_pixels


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
        paste: Lesions pasted into crops (off by default).
        hard_negatives: Control crops centred on bright uptake (off by default).
    """

    height: int = 192
    width: int = 192
    p_tumor: float = 0.5
    p_control: float = 0.25
    scale: tuple[float, float] = (0.85, 1.15)
    intensity: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.25)
    paste: PasteConfig = field(default_factory=PasteConfig)
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)


@dataclass
class _Host:
    """A study at the network's scale, with what pasting and hard negatives read of it."""

    study: Study
    box: tuple[int, int, int, int] | None
    uptake: float
    bright: np.ndarray


class CropSampler:
    """Draws augmented (image, label) crop batches from decoded studies, reproducibly.

    The crops' positions and augmentation come from one generator; pasting and hard
    negatives draw from generators of their own, so that a run with them sees the same
    crop stream as one without (a paired comparison at one seed).
    """

    def __init__(
        self, studies: Sequence[Study], config: CropConfig, seed: int, input_scale: float = 1.0
    ) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.hard_rng = np.random.default_rng([seed, 0x4A2D])
        hosts = []
        for s in studies:
            image = resample(s.image, input_scale)
            label = resample(s.label.astype(np.float32), input_scale)
            hosts.append(
                _Host(
                    Study(s.name, image, label, s.is_patient),
                    body_box(image),
                    body_uptake(image),
                    bright_pixels(image, config.hard_negatives.percentile, exclude=label > 0.1),
                )
            )
        self.patients = [h for h in hosts if h.study.is_patient]
        self.controls = [h for h in hosts if not h.study.is_patient]
        if not self.patients:
            raise ValueError("training needs at least one patient with a label")
        self.tumor_pixels = [np.argwhere(h.study.label > 0.5) for h in self.patients]
        self.paster = (
            LesionPaster(
                [(h.study.image, h.study.label) for h in self.patients], config.paste, seed
            )
            if config.paste.p_paste > 0
            else None
        )

    def _origin(
        self,
        shape: tuple[int, int],
        h: int,
        w: int,
        center: tuple[int, int] | None,
        rng: np.random.Generator,
    ) -> tuple[int, int]:
        """Top-left corner of an h x w window: random, or about `center` with jitter."""
        H, W = shape
        if center is None:
            y0 = int(rng.integers(min(0, H - h), max(0, H - h) + 1))
            x0 = int(rng.integers(min(0, W - w), max(0, W - w) + 1))
            return y0, x0
        jy, jx = rng.integers(-h // 3, h // 3 + 1), rng.integers(-w // 3, w // 3 + 1)
        return int(center[0] - h // 2 + jy), int(center[1] - w // 2 + jx)

    @staticmethod
    def _cut(study: Study, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """The h x w window at (y0, x0), zero-padded where it leaves the image."""
        H, W = study.image.shape
        img = np.zeros((h, w), dtype=np.float32)
        lab = np.zeros((h, w), dtype=np.float32)
        sy, sx = max(y0, 0), max(x0, 0)
        ey, ex = min(y0 + h, H), min(x0 + w, W)
        if ey > sy and ex > sx:
            img[sy - y0 : ey - y0, sx - x0 : ex - x0] = study.image[sy:ey, sx:ex]
            lab[sy - y0 : ey - y0, sx - x0 : ex - x0] = study.label[sy:ey, sx:ex]
        return img, lab

    def _window(self, h: int, w: int) -> tuple[_Host, int, int]:
        """Which study the crop comes from, and its window's corner."""
        c = self.config
        u = self.rng.random()
        if u < c.p_tumor:
            k = int(self.rng.integers(len(self.patients)))
            pix = self.tumor_pixels[k]
            center = tuple(pix[int(self.rng.integers(len(pix)))]) if len(pix) else None
            host = self.patients[k]
            return host, *self._origin(host.study.image.shape, h, w, center, self.rng)
        if u < c.p_tumor + c.p_control and self.controls:
            host = self.controls[int(self.rng.integers(len(self.controls)))]
            y0, x0 = self._origin(host.study.image.shape, h, w, None, self.rng)
            hn = c.hard_negatives
            if hn.p_bright > 0 and len(host.bright) and self.hard_rng.random() < hn.p_bright:
                at = host.bright[int(self.hard_rng.integers(len(host.bright)))]
                y0, x0 = self._origin(
                    host.study.image.shape, h, w, (int(at[0]), int(at[1])), self.hard_rng
                )
            return host, y0, x0
        host = self.patients[int(self.rng.integers(len(self.patients)))]
        return host, *self._origin(host.study.image.shape, h, w, None, self.rng)

    def _one(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        s = float(self.rng.uniform(*c.scale))
        h, w = int(round(c.height * s)), int(round(c.width * s))
        host, y0, x0 = self._window(h, w)
        img, lab = self._cut(host.study, y0, x0, h, w)
        if self.paster is not None:
            img, lab = self.paster(img, lab, host.uptake, host.box, (y0, x0), host.bright)
        if self.rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        gain = float(self.rng.uniform(*c.intensity))
        gamma = float(self.rng.uniform(*c.gamma))
        img = np.clip(np.power(np.clip(img, 0.0, 1.0), gamma) * gain, 0.0, 1.0)
        ti = torch.from_numpy(np.ascontiguousarray(img))[None, None]
        tl = torch.from_numpy(np.ascontiguousarray(lab))[None, None]
        if (h, w) != (c.height, c.width):
            size = (c.height, c.width)
            ti = F.interpolate(ti, size=size, mode="bilinear", align_corners=False)
            tl = F.interpolate(tl, size=size, mode="bilinear", align_corners=False)
        return ti[0], tl[0]

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A (size, 1, H, W) image batch and its label batch."""
        pairs = [self._one() for _ in range(size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def state(self) -> dict[str, Any]:
        """The generators' states, for a checkpoint."""
        return {
            "crops": dict(self.rng.bit_generator.state),
            "hard": dict(self.hard_rng.bit_generator.state),
            "paste": self.paster.state() if self.paster is not None else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.rng.bit_generator.state = state["crops"]
        self.hard_rng.bit_generator.state = state["hard"]
        if self.paster is not None:
            self.paster.restore(state["paste"])

    def reseed(self, key: Sequence[int]) -> None:
        """Give this (forked) copy its own streams: one loader worker's."""
        self.rng = np.random.default_rng(list(key))
        self.hard_rng = np.random.default_rng([*key, 0x4A2D])
        if self.paster is not None:
            self.paster.rng = np.random.default_rng([*key, 0x9A57E])


#: How loader workers start. Not by forking the training process: it may hold thread
#: pools (OpenVINO's, CUDA's), and with forked workers a process that had run OpenVINO
#: crashed with a segmentation fault when they exited (3 times in 3). Workers of a fork
#: server are not the training process's children; each gets the sampler pickled once
#: (the whole development set: 518 MB a worker, under a second).
LOADER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


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
        # The worker holds its own copy of the sampler: give it its own stream.
        self.sampler.reseed([self.seed, worker, self.start_step])
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
        multiprocessing_context=LOADER_START,
    )
    return iter(loader)
