"""The whole-image recipe's parts on tiny inputs: the sampler, augmentation, the
deep-supervised network and its loss, EMA, and a short training that writes OOF maps."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.dataset import Study
from model.deep_attention_unet import DeepAttentionUnet
from model.manifest import read_manifest
from model.network import build_network, stride_multiple
from model.predictor import Predictor
from model.training.augmentation import NONE, Augmentation, augment, spatial
from model.training.ema import EMA
from model.training.losses import DeepSupervisionLoss, DiceBCELoss, per_image_soft_dice
from model.training.trainer import TrainConfig, train
from model.training.validation import OOF_NAME, load_oof
from model.training.whole_images import WholeImageConfig, WholeImageSampler
from tests.model.test_training_smoke import tiny_data  # noqa: F401  (fixture)

TINY_DEEP = {
    "name": "DeepAttentionUnet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [4, 8, 8, 8],
    "strides": [2, 2, 2],
    "deep_supervision": 2,
    "dropout": 0.0,
}


def _study(name: str, h: int, w: int, patient: bool, seed: int) -> Study:
    rng = np.random.default_rng(seed)
    image = rng.random((h, w), dtype=np.float32)
    label = np.zeros((h, w), bool)
    if patient:
        label[h // 3 : h // 3 + 4, w // 2 : w // 2 + 4] = True
    return Study(name, image, label, patient)


def _studies() -> list[Study]:
    heights = [40, 44, 48, 90, 94, 98]
    pats = [_study(f"p{i}", h, 30, True, i) for i, h in enumerate(heights)]
    ctrls = [_study(f"c{i}", h, 30, False, 10 + i) for i, h in enumerate(heights)]
    return pats + ctrls


def test_whole_image_batches_are_padded_bucketed_and_reproducible() -> None:
    cfg = WholeImageConfig(p_control=0.0, neighbours=3, augmentation=NONE)
    sampler = WholeImageSampler(_studies(), cfg, seed=1, input_scale=1.0, multiple=16)
    for _ in range(10):
        x, y = sampler.batch(2)
        assert x.shape == y.shape
        assert x.shape[0] == 2
        h, w = x.shape[-2:]
        assert h % 16 == 0
        assert w == 32
        # three nearest heights: never a 40-px study with a 98-px one
        assert h in (48, 64, 96, 112)
        assert not (h == 112 and bool((x[:, 0, 50:] == 0).all()))
        assert float(y.amax(dim=(1, 2, 3)).min()) > 0.99, "p_control 0: every image a patient"
        assert bool((x[..., 30:] == 0).all()), "padding is zero (no uptake)"
    again = WholeImageSampler(_studies(), cfg, seed=1, input_scale=1.0, multiple=16)
    first = [again.batch(2)[0] for _ in range(3)]
    state = again.state()
    after = again.batch(2)[0]
    again.restore(state)
    assert torch.equal(again.batch(2)[0], after)
    fresh = WholeImageSampler(_studies(), cfg, seed=1, input_scale=1.0, multiple=16)
    assert all(torch.equal(fresh.batch(2)[0], f) for f in first)


def test_controls_only_batches_have_empty_labels_and_scale_halves_the_images() -> None:
    cfg = WholeImageConfig(p_control=0.999, neighbours=6, augmentation=NONE)
    sampler = WholeImageSampler(_studies(), cfg, seed=0, input_scale=0.5, multiple=8)
    x, y = sampler.batch(3)
    assert float(y.sum()) == 0.0
    assert x.shape[-1] == 16
    assert x.shape[-2] <= 56


def test_no_augmentation_is_the_identity_and_a_flip_mirrors_image_and_label_alike() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 16, 12)
    y = (x > 0.7).float()
    ax, ay = augment(x, y, NONE, gen)
    assert torch.allclose(ax, x, atol=1e-6)
    assert torch.equal(ay, y)
    flip_only = replace(NONE, p_flip=1.0)
    fx, fy = spatial(x, y, flip_only, gen)
    assert torch.allclose(fx, torch.flip(x, dims=[-1]), atol=1e-5)
    assert torch.allclose(fy, torch.flip(y, dims=[-1]), atol=1e-5)


def test_spatial_augmentation_moves_image_and_label_together_and_keeps_the_head_up() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.zeros(8, 1, 64, 48)
    x[:, :, 4:12, 18:30] = 1.0  # a bright "head" at the top
    rot_scale = replace(NONE, p_rotate=1.0, rotation_deg=15.0, p_scale=1.0, p_flip=0.5)
    ax, ay = spatial(x, x.clone(), rot_scale, gen)
    assert torch.allclose(ax, ay), "the label must follow the image exactly"
    assert not torch.allclose(ax, x)
    rows = torch.arange(64).float()[None, :]
    centre = (ax[:, 0].sum(-1) * rows).sum(-1) / ax[:, 0].sum((-1, -2))
    assert bool((centre < 32).all()), "no vertical flip: the head stays in the top half"


def test_intensity_augmentation_stays_in_range_and_spares_the_label() -> None:
    gen = torch.Generator().manual_seed(5)
    every = Augmentation(
        p_flip=0, p_rotate=0, p_scale=0, p_gamma=1, p_brightness=1, p_contrast=1,
        p_noise=1, p_blur=1, p_lowres=1,
    )  # fmt: skip
    x = torch.rand(4, 1, 20, 20)
    y = (x > 0.5).float()
    ax, ay = augment(x, y, every, gen)
    assert torch.equal(ay, y)
    assert float(ax.min()) >= 0.0
    assert float(ax.max()) <= 1.0
    assert not torch.allclose(ax, x)


def test_deep_supervision_heads_in_training_and_one_output_in_eval() -> None:
    net = build_network(TINY_DEEP)
    assert isinstance(net, DeepAttentionUnet)
    assert stride_multiple(TINY_DEEP) == 8
    x = torch.rand(2, 1, 32, 24)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 32, 24), (2, 1, 16, 12), (2, 1, 8, 6)]
    out = net.eval()(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, 32, 24)
    torch.testing.assert_close(out, net.train()(x)[0])  # same main head, no batch statistics
    with pytest.raises(ValueError, match="deep_supervision"):
        build_network({**TINY_DEEP, "deep_supervision": 3})


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


def test_whole_image_training_ships_ema_weights_and_out_of_fold_maps(
    tiny_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    def cfg(out: Path) -> TrainConfig:
        return TrainConfig(
            data=tiny_data, out=out, epochs=1, steps_per_epoch=3, batch_size=2,
            warmup_steps=1, folds=2, seed=7, precision="fp32", device="cpu",
            architecture=dict(TINY_DEEP), sampler="whole", loss="dice-bce", ema_decay=0.99,
        )  # fmt: skip

    first, second = train(cfg(tmp_path / "a")), train(cfg(tmp_path / "b"))
    m = read_manifest(first)
    assert m.weights_sha256 == read_manifest(second).weights_sha256, "deterministic for a seed"
    assert m.architecture["name"] == "DeepAttentionUnet"
    assert m.training["weights"] == "final EMA (decay 0.99)"
    assert m.training["config"]["sampler"] == "whole"
    oof = load_oof(first / OOF_NAME)
    assert set(oof) == {"plain", "tta"}
    assert len(oof["plain"]) == m.training["n_validation"]
    pred = Predictor.from_artifact(first, device="cpu")
    name = sorted(oof["plain"])[0]
    shape = oof["plain"][name].shape
    assert pred.predict([np.zeros(shape, np.float32)])[0].shape == shape
    assert all(float(p.min()) >= 0.0 and float(p.max()) <= 1.0 for p in oof["plain"].values())
    assert math.isfinite(m.metrics["crossfit_dice"])
