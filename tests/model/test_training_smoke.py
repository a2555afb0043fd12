"""A few training steps on a tiny subset write a loadable, deterministic artifact."""

from __future__ import annotations

import argparse
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import load_artifact
from model.dataset import find_studies, held_out_by, split
from model.manifest import read_manifest
from model.predictor import Predictor
from model.training.sampling import CropConfig
from model.training.trainer import TrainConfig, lr_factor, train
from tests.model.conftest import TINY_ARCH

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dmiai2023"


@pytest.fixture(autouse=True)
def _sigchld_as_before() -> Iterator[None]:
    """torch's loader installs a SIGCHLD handler for the whole process and leaves it
    there. `tumorseg train` ends with its loader, but this test process goes on, and once
    OpenVINO had run in it, the next child to exit (a later test's subprocess) crashed it
    in that handler with a segmentation fault (2 times in 2; none with the handler put
    back)."""
    before = signal.getsignal(signal.SIGCHLD)
    yield
    signal.signal(signal.SIGCHLD, before)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"development data not found at {DATA}")
    root = tmp_path / "data"
    for sub in ("patients/imgs", "patients/labels", "controls/imgs"):
        (root / sub).mkdir(parents=True)
    for n in ("000", "001", "002", "003"):
        shutil.copy(DATA / f"patients/imgs/patient_{n}.png", root / "patients/imgs")
        shutil.copy(DATA / f"patients/labels/segmentation_{n}.png", root / "patients/labels")
    for n in ("000", "001"):
        shutil.copy(DATA / f"controls/imgs/control_{n}.png", root / "controls/imgs")
    return root


def config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=data,
        out=out,
        epochs=1,
        steps_per_epoch=3,
        batch_size=2,
        warmup_steps=1,
        folds=2,
        seed=7,
        precision="fp32",
        device="cpu",
        architecture=dict(TINY_ARCH),
        crop=CropConfig(height=64, width=64),
    )


def test_smoke_training_writes_a_loadable_deterministic_artifact(
    tiny_data: Path, tmp_path: Path
) -> None:
    first = train(config(tiny_data, tmp_path / "a"))
    second = train(config(tiny_data, tmp_path / "b"))
    m1, m2 = read_manifest(first), read_manifest(second)
    assert m1.trained
    assert m1.training["steps"] == 3
    assert m1.training["data_fingerprint"] == m2.training["data_fingerprint"]
    assert m1.weights_sha256 == m2.weights_sha256, "same seed must give the same weights"
    assert 0.0 < m1.threshold < 1.0
    assert {"validation", "effects", "crossfit_dice"} <= m1.metrics.keys()
    load_artifact(first)
    pred = Predictor.from_artifact(first, device="cpu")
    mask = pred.masks([np.zeros((100, 80), np.float32)])[0]
    assert mask.shape == (100, 80)
    assert (tmp_path / "a" / "runs").is_dir()


def test_a_second_seed_of_a_fold_holds_out_the_same_studies(
    tiny_data: Path, tmp_path: Path
) -> None:
    first = read_manifest(train(config(tiny_data, tmp_path / "a")))
    again = config(tiny_data, tmp_path / "b")
    again.seed, again.split_seed = 8, 7
    second = read_manifest(train(again))
    assert held_out_by(first.training) == held_out_by(second.training) == (7, 2, 0)
    assert second.training["seed"] == 8
    assert first.weights_sha256 != second.weights_sha256  # another initialisation and stream
    files = find_studies(tiny_data)
    assert split(files, *held_out_by(second.training))[1] == split(files, 7, 2, 0)[1]


def test_runs_before_split_seed_split_by_their_seed() -> None:
    assert held_out_by({"seed": 3, "folds": 5, "fold": 2}) == (3, 5, 2)
    assert held_out_by({"seed": 3, "split_seed": 0, "folds": 5, "fold": 2}) == (0, 5, 2)


def test_resume_continues_from_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    cfg = config(tiny_data, tmp_path / "r")
    train(cfg)
    cfg.epochs, cfg.resume = 2, True
    resumed = read_manifest(train(cfg))
    assert resumed.training["steps"] == 6


def test_lr_schedule_warms_up_then_decays() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.05
    # a time budget that is nearly spent anneals the rate whatever the step count
    assert lr_factor(20, 1000, 10, time_progress=0.999) < 0.05


def test_loader_workers_give_reproducible_distinct_streams(tiny_data: Path) -> None:
    from model.dataset import find_studies, load_study
    from model.training.sampling import CropSampler, parallel_batches

    studies = [load_study(f) for f in find_studies(tiny_data)]
    cfg = CropConfig(height=64, width=64)

    def draw(seed: int) -> list[np.ndarray]:
        stream = parallel_batches(CropSampler(studies, cfg, seed, 0.5), 3, 2, seed)
        return [next(stream)[0].numpy() for _ in range(4)]

    first, again, other = draw(1), draw(1), draw(2)
    assert first[0].shape == (3, 1, 64, 64)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1]), "the two workers must not repeat each other"
    assert not np.array_equal(first[0], other[0])


def test_training_with_loader_workers_writes_an_artifact(tiny_data: Path, tmp_path: Path) -> None:
    cfg = config(tiny_data, tmp_path / "w")
    cfg.workers = 2
    manifest = read_manifest(train(cfg))
    assert manifest.training["steps"] == 3
    assert manifest.training["config"]["workers"] == 2


def _train_args(tiny_data: Path, out: Path, *extra: str) -> argparse.Namespace:
    from cli.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(["--data", str(tiny_data), "--out", str(out), *extra])


def test_train_command_without_recipe_flags_builds_the_released_recipe(
    tiny_data: Path, tmp_path: Path
) -> None:
    from cli.commands.train import build_config
    from model.network import ARCHITECTURES
    from model.training.recipes import RECIPES

    released = RECIPES["released"]
    cfg = build_config(_train_args(tiny_data, tmp_path / "o"))
    assert cfg.recipe == "released"
    assert cfg.architecture == ARCHITECTURES[released.architecture]
    assert cfg.architecture["name"] == "EfficientAttentionUnet"
    assert (cfg.pretrained, cfg.loss, cfg.ema_decay) == ("imagenet", "dice-bce", 0.999)
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.steps_per_epoch) == (16, 1e-3, 5, 250)
    assert cfg.input_scale == 0.5
    assert cfg.lambda_hard == 0.0
    assert cfg.crop.paste.p_paste == 0.0
    assert cfg.crop.hard_negatives.p_bright == 0.0
    # the released members' own recorded configuration, field by field
    recorded = read_manifest(
        Path(__file__).resolve().parents[2] / "model/folds/eff-lite0-dicebce-20261203/fold-0"
    ).training["config"]
    for key in ("batch_size", "lr", "epochs", "steps_per_epoch", "ema_decay", "loss"):
        assert recorded[key] == getattr(cfg, key), key
    assert recorded["architecture"] == cfg.architecture


def test_train_command_refuses_an_unknown_recipe(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.commands import train as train_command

    assert train_command.run(_train_args(tiny_data, tmp_path / "o", "--recipe", "whole")) == 2
    assert "no recipe 'whole'; known: released" in capsys.readouterr().out


def test_train_command_records_its_options(tiny_data: Path, tmp_path: Path) -> None:
    from cli.commands import train as train_command

    args = _train_args(
        tiny_data,
        tmp_path / "o",
        *["--device", "cpu", "--precision", "fp32", "--epochs", "1", "--steps-per-epoch", "2"],
        *["--batch-size", "2", "--crop-size", "64", "--folds", "2"],
        *["--architecture", "attention-unet", "--loss", "dice-bce"],
        *["--dropout", "0.1", "--weight-decay", "0.02", "--p-control", "0.4"],
        *["--paste-lesions", "0.5", "--hard-negatives", "0.75", "--hard-pixel-weight", "1"],
        *["--input-scale", "1.0"],
    )
    assert train_command.run(args) == 0
    (artifact,) = (tmp_path / "o").glob("attention-unet-*")
    manifest = read_manifest(artifact)
    assert manifest.architecture["dropout"] == 0.1
    config = manifest.training["config"]
    assert config["weight_decay"] == 0.02
    assert config["crop"]["p_control"] == 0.4
    assert config["crop"]["paste"]["p_paste"] == 0.5
    assert config["crop"]["hard_negatives"]["p_bright"] == 0.75
    assert config["lambda_hard"] == 1.0
    assert manifest.training["recipe"] == "released"
    assert manifest.preprocessing["input_scale"] == 1.0  # inference runs at the trained scale
    load_artifact(artifact)  # the dropout network rebuilds from its manifest


def test_train_command_refuses_an_input_scale_out_of_range(tiny_data: Path, tmp_path: Path) -> None:
    from cli.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(
        ["--data", str(tiny_data), "--out", str(tmp_path / "o"), "--input-scale", "2"]
    )
    assert train_command.run(args) == 2
    assert not (tmp_path / "o").exists()


def test_pasting_and_hard_negatives_keep_the_crop_stream(tiny_data: Path) -> None:
    from dataclasses import replace

    from model.dataset import find_studies, load_study
    from model.training.copy_paste import PasteConfig
    from model.training.hard_negatives import HardNegativeConfig
    from model.training.sampling import CropSampler

    studies = [load_study(f) for f in find_studies(tiny_data)]
    plain_cfg = CropConfig(height=64, width=64, p_control=0.0)
    pasted_cfg = replace(plain_cfg, paste=PasteConfig(p_paste=1.0, max_lesions=2))
    x, y = CropSampler(studies, plain_cfg, 3, 0.5).batch(16)
    xp, yp = CropSampler(studies, pasted_cfg, 3, 0.5).batch(16)
    xp2, yp2 = CropSampler(studies, pasted_cfg, 3, 0.5).batch(16)
    assert torch.equal(xp, xp2)
    assert torch.equal(yp, yp2)
    assert float(xp.min()) >= 0.0
    assert float(xp.max()) <= 1.0
    # pasting only adds: same crops, never darker, more labelled pixels
    assert bool((xp >= x - 1e-6).all())
    assert float(yp.sum()) > float(y.sum())
    # hard negatives move control crops only, drawing from their own generator
    hard_cfg = replace(plain_cfg, hard_negatives=HardNegativeConfig(p_bright=1.0))
    xh, _ = CropSampler(studies, hard_cfg, 3, 0.5).batch(16)
    assert torch.equal(x, xh), "without control crops the stream is the plain one"


def test_fine_tuning_starts_from_an_artifact_and_records_it(
    tiny_data: Path, tmp_path: Path
) -> None:
    base = train(config(tiny_data, tmp_path / "base"))
    cfg = config(tiny_data, tmp_path / "tuned")
    cfg.init_from, cfg.lr, cfg.input_scale = base, 0.0, 1.0  # lr 0: the weights must stay
    tuned = train(cfg)
    manifest = read_manifest(tuned)
    assert manifest.training["initialized_from"] == read_manifest(base).version
    assert manifest.preprocessing["input_scale"] == 1.0
    (_, a), (_, b) = load_artifact(base), load_artifact(tuned)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_fine_tuning_refuses_another_architecture(tiny_data: Path, tmp_path: Path) -> None:
    base = train(config(tiny_data, tmp_path / "base"))
    cfg = config(tiny_data, tmp_path / "other")
    cfg.init_from, cfg.architecture = base, {**TINY_ARCH, "channels": [4, 8, 32]}
    with pytest.raises(ValueError, match="architecture"):
        train(cfg)
    assert not list((tmp_path / "other").glob("attention-unet-*"))


def test_train_command_refuses_an_init_artifact_that_is_not_there(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args(
        ["--data", str(tiny_data), "--out", str(tmp_path / "o"), "--init-from", str(tmp_path)]
    )
    assert train_command.run(args) == 2
    assert "--init-from: no manifest.json" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()
