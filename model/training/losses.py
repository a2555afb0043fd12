"""Training losses: per-image Dice plus BCE (the released recipe's, with an optional
term on the hardest pixels of negative crops), and the previous single network's
DiceFocal, with deep supervision.

The competition scores Dice per patient image and averages over patients, so
`DiceBCELoss` takes the soft Dice of each image that holds tumor and averages those
(controls add nothing to it: a Dice of an empty image is undefined), and adds the binary
cross-entropy over every pixel of every image, which is what teaches the network to keep
controls and physiological uptake clean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

#: Relative weights of the full-resolution output and the auxiliary heads (halving in
#: size); normalised to sum to 1 over the heads a network has.
DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25, 0.125)


def per_image_soft_dice(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """1 - soft Dice of each image with tumor in `target`, averaged; 0 when none has any.

    Args:
        logits: (B, 1, H, W) logits.
        target: (B, 1, H, W) soft labels in [0, 1].
        smooth: Added to numerator and denominator (pixels).
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    has_tumor = t.sum(1) > 0
    if not bool(has_tumor.any()):
        return logits.sum() * 0.0  # keeps the graph (and its device)
    inter = (p * t).sum(1)
    dice = (2 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1.0 - dice[has_tumor]).mean()


def hardest_negative_bce(
    logits: torch.Tensor, target: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Online hard-example mining on negative images: the mean BCE of the `fraction` of
    pixels with the highest loss in each image without tumor (a control crop, or a
    patient crop away from its tumors), averaged over those images; 0 when none.

    Args:
        logits: (B, 1, H, W) logits.
        target: (B, 1, H, W) soft labels in [0, 1].
        fraction: Share of each negative image's pixels that count (0 < fraction <= 1).
    """
    negative = target.flatten(1).sum(1) == 0
    if not bool(negative.any()):
        return logits.sum() * 0.0
    pixels = F.binary_cross_entropy_with_logits(
        logits[negative].float(), target[negative].float(), reduction="none"
    ).flatten(1)
    k = max(1, int(round(pixels.shape[1] * fraction)))
    return pixels.topk(k, dim=1).values.mean()


class DiceBCELoss(torch.nn.Module):
    """Per-image soft Dice on images with tumor plus BCE on every image, plus
    `lambda_hard` times the BCE of the hardest `hard_fraction` of negative images' pixels."""

    def __init__(
        self,
        lambda_dice: float = 1.0,
        lambda_bce: float = 1.0,
        lambda_hard: float = 0.0,
        hard_fraction: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 < hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in (0, 1], got {hard_fraction}")
        self.lambda_dice = lambda_dice
        self.lambda_bce = lambda_bce
        self.lambda_hard = lambda_hard
        self.hard_fraction = hard_fraction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        loss = self.lambda_dice * per_image_soft_dice(logits, target) + self.lambda_bce * bce
        if self.lambda_hard:
            loss = loss + self.lambda_hard * hardest_negative_bce(
                logits, target, self.hard_fraction
            )
        return loss


class DeepSupervisionLoss(torch.nn.Module):
    """`loss` on each output, against the label area-averaged to that output's size,
    weighted by `DEEP_SUPERVISION_WEIGHTS` normalised over the outputs given."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        weights = DEEP_SUPERVISION_WEIGHTS[: len(outs)]
        norm = sum(weights)
        total = outs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip((w / norm for w in weights), outs, strict=True):
            t = (
                target
                if out.shape[-2:] == target.shape[-2:]
                else F.adaptive_avg_pool2d(target, (out.shape[-2], out.shape[-1]))
            )
            total = total + w * self.loss(out.float(), t)
        return total


def make_loss(
    name: str, lambda_dice: float = 1.0, lambda_focal: float = 10.0, lambda_hard: float = 0.0
) -> DeepSupervisionLoss:
    """'dice-bce' (per-image Dice + BCE, the released recipe's; `lambda_hard` weights its
    hard-negative term) or 'dice-focal' (the previous single network's, batch Dice),
    wrapped for networks with or without auxiliary outputs."""
    if name == "dice-bce":
        return DeepSupervisionLoss(DiceBCELoss(lambda_dice, lambda_hard=lambda_hard))
    if lambda_hard:
        raise ValueError("the hard-negative term belongs to the dice-bce loss")
    if name == "dice-focal":
        return DeepSupervisionLoss(
            DiceFocalLoss(
                sigmoid=True, batch=True, lambda_dice=lambda_dice, lambda_focal=lambda_focal
            )
        )
    raise ValueError(f"unknown loss {name!r}: dice-bce or dice-focal")
