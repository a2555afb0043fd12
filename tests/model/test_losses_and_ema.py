"""The released recipe's loss (per-image Dice + BCE, with deep supervision), its EMA,
and a short training that ships the EMA weights and writes out-of-fold maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.manifest import read_manifest
from model.predictor import Predictor
from model.training.ema import EMA
from model.training.losses import DeepSupervisionLoss, DiceBCELoss, per_image_soft_dice
from model.training.sampling import CropConfig
from model.training.trainer import TrainConfig, train
from model.training.validation import OOF_NAME, load_oof
from tests.model.conftest import TINY_ARCH
from tests.model.test_training_smoke import tiny_data  # noqa: F401  (fixture)


def test_per_image_dice_averages_patients_and_ignores_controls() -> None:
    big = 30.0  # sigmoid(30) == 1, sigmoid(-30) == 0 in float32
    logits = torch.full((3, 1, 2, 2), -big)
    target = torch.zeros(3, 1, 2, 2)
    target[0, 0, 0, :] = 1  # two tumor pixels, predicted exactly
    logits[0, 0, 0, :] = big
    target[1, 0, 0, 0] = 1  # one tumor pixel, predicted 1 + 1 false positive
    logits[1, 0, 0, 0] = logits[1, 0, 1, 1] = big
    logits[2, 0, 1, 1] = big  # a control with a false positive: not in the Dice
    smooth = 1.0
    d0 = (2 * 2 + smooth) / (2 + 2 + smooth)
    d1 = (2 * 1 + smooth) / (2 + 1 + smooth)
    expected = 1 - (d0 + d1) / 2
    assert float(per_image_soft_dice(logits, target)) == pytest.approx(expected, abs=1e-5)
    assert float(per_image_soft_dice(logits[2:], target[2:])) == 0.0
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(DiceBCELoss()(logits, target)) == pytest.approx(expected + float(bce), abs=1e-5)


def test_deep_supervision_loss_weights_the_heads_one_half_quarter_normalised() -> None:
    class Sum(torch.nn.Module):  # a "loss" that exposes what each head contributes
        def forward(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return out.mean() + 0 * t.sum()

    outs = [
        torch.full((1, 1, 8, 8), 1.0),
        torch.full((1, 1, 4, 4), 2.0),
        torch.full((1, 1, 2, 2), 4.0),
    ]
    total = DeepSupervisionLoss(Sum())(outs, torch.zeros(1, 1, 8, 8))
    assert float(total) == pytest.approx((1 * 1 + 0.5 * 2 + 0.25 * 4) / 1.75)
    # the label is area-averaged to each head's size
    seen: list[torch.Tensor] = []

    class Record(torch.nn.Module):
        def forward(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            seen.append(t)
            return out.sum() * 0

    target = torch.zeros(1, 1, 8, 8)
    target[..., :2, :2] = 1
    DeepSupervisionLoss(Record())(outs, target)
    assert [tuple(t.shape[-2:]) for t in seen] == [(8, 8), (4, 4), (2, 2)]
    assert float(seen[1][0, 0, 0, 0]) == 1.0
    assert float(seen[2][0, 0, 0, 0]) == 0.25


def test_ema_follows_the_weights_at_its_rate() -> None:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.9)
    assert ema.rate(0) == pytest.approx(0.1)
    assert ema.rate(10**6) == 0.9
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, step=10**6)  # 0.9 * 1 + 0.1 * 3
    assert torch.allclose(ema.network.weight, torch.full((1, 2), 1.2))
    ema.update(net, step=0)  # early on, rate 0.1: nearly a copy
    assert torch.allclose(ema.network.weight, torch.full((1, 2), 0.1 * 1.2 + 0.9 * 3.0))
    assert not ema.network.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_ema_training_ships_ema_weights_and_out_of_fold_maps(
    tiny_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    def cfg(out: Path) -> TrainConfig:
        return TrainConfig(
            data=tiny_data, out=out, epochs=1, steps_per_epoch=3, batch_size=2,
            warmup_steps=1, folds=2, seed=7, precision="fp32", device="cpu",
            architecture=dict(TINY_ARCH), crop=CropConfig(height=64, width=64),
            loss="dice-bce", lambda_hard=1.0, ema_decay=0.99,
        )  # fmt: skip

    first, second = train(cfg(tmp_path / "a")), train(cfg(tmp_path / "b"))
    m = read_manifest(first)
    assert m.weights_sha256 == read_manifest(second).weights_sha256, "deterministic for a seed"
    assert m.training["weights"] == "final EMA (decay 0.99)"
    assert m.training["config"]["lambda_hard"] == 1.0
    oof = load_oof(first / OOF_NAME)
    assert set(oof) == {"plain", "tta"}
    assert len(oof["plain"]) == m.training["n_validation"]
    pred = Predictor.from_artifact(first, device="cpu")
    name = sorted(oof["plain"])[0]
    shape = oof["plain"][name].shape
    assert pred.masks([np.zeros(shape, np.float32)])[0].shape == shape
    assert all(float(p.min()) >= 0.0 and float(p.max()) <= 1.0 for p in oof["plain"].values())
    assert math.isfinite(m.metrics["crossfit_dice"])
