"""Batches of whole studies at the network's input scale, bucketed by height.

A crop shows a bladder or a heart without the body around it; a whole study shows where
the uptake sits. Each batch takes an anchor study (a control with probability
`p_control`, else a patient), then batch-mates of the same kind drawn among the
`neighbours` studies nearest to the anchor in height, and pads every image (zeros: no
uptake) to the batch's tallest and widest, rounded up to the network's stride multiple.
The dataset lives on the training device as uint8 (about 0.1 MB a study at half scale),
so batching and augmentation never leave it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.dataset import Study
from model.preprocessing import resample
from model.training.augmentation import Augmentation, augment


@dataclass(frozen=True)
class WholeImageConfig:
    """How whole-image batches are drawn.

    Attributes:
        p_control: Share of batches anchored on (and filled with) healthy controls.
        neighbours: Batch-mates are drawn among this many studies nearest in height.
        augmentation: Per-transform probabilities and ranges.
    """

    p_control: float = 0.3
    neighbours: int = 16
    augmentation: Augmentation = field(default_factory=Augmentation)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _Group:
    """Studies of one kind (patients or controls) as uint8 tensors, sorted by height."""

    def __init__(self, studies: Sequence[Study], input_scale: float, device: torch.device):
        scaled = [
            (resample(s.image, input_scale), resample(s.label.astype(np.float32), input_scale))
            for s in studies
        ]
        scaled.sort(key=lambda p: p[0].shape[0])
        self.images = [torch.from_numpy(_to_u8(i)).to(device) for i, _ in scaled]
        self.labels = [torch.from_numpy(_to_u8(lab)).to(device) for _, lab in scaled]
        self.heights = np.array([i.shape[0] for i, _ in scaled])

    def __len__(self) -> int:
        return len(self.images)


def _to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


class WholeImageSampler:
    """Draws augmented, height-bucketed whole-study batches, reproducibly for a seed.

    Args:
        studies: Decoded training studies (patients with labels, controls).
        config: Sampling and augmentation settings.
        seed: Seeds both the study choice and the augmentation.
        input_scale: The network's scale (as in the manifest).
        multiple: Padded heights and widths are multiples of this (the network stride).
        device: Where the dataset, the batches and the augmentation live.
    """

    def __init__(
        self,
        studies: Sequence[Study],
        config: WholeImageConfig,
        seed: int,
        input_scale: float = 0.5,
        multiple: int = 32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.multiple = multiple
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.patients = _Group([s for s in studies if s.is_patient], input_scale, self.device)
        self.controls = _Group([s for s in studies if not s.is_patient], input_scale, self.device)
        if not len(self.patients):
            raise ValueError("training needs at least one patient with a label")

    def _members(self, size: int) -> tuple[_Group, list[int]]:
        use_controls = len(self.controls) > 0 and self.rng.random() < self.config.p_control
        group = self.controls if use_controls else self.patients
        anchor = int(self.rng.integers(len(group)))
        k = min(len(group), max(size, self.config.neighbours))
        # The k studies nearest in height: a window around the anchor in sorted order.
        lo = int(np.clip(anchor - k // 2, 0, len(group) - k))
        mates = self.rng.choice(np.arange(lo, lo + k), size=size - 1, replace=size - 1 > k)
        return group, [anchor, *(int(m) for m in mates)]

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A float (size, 1, H, W) image batch in [0, 1] and its soft label batch."""
        group, idx = self._members(size)
        h = _round_up(max(group.images[i].shape[0] for i in idx), self.multiple)
        w = _round_up(max(group.images[i].shape[1] for i in idx), self.multiple)
        x = torch.zeros((size, 1, h, w), dtype=torch.uint8, device=self.device)
        y = torch.zeros_like(x)
        for j, i in enumerate(idx):
            ih, iw = group.images[i].shape
            x[j, 0, :ih, :iw] = group.images[i]
            y[j, 0, :ih, :iw] = group.labels[i]
        xf, yf = x.float().div_(255.0), y.float().div_(255.0)
        return augment(xf, yf, self.config.augmentation, self.gen)

    def state(self) -> dict[str, Any]:
        return {"numpy": dict(self.rng.bit_generator.state), "torch": self.gen.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy"]
        self.gen.set_state(state["torch"])
