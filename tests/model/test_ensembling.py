"""From fold runs to an ensemble: packed folds, pooled out-of-fold tuning, the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.held_out import member_splits
from model.manifest import ArtifactError, read_manifest
from model.predictor import Predictor
from model.training.ensembling import build_ensemble, pack_fold, pooled_maps, tune_pooled
from model.training.sampling import CropConfig
from model.training.trainer import TrainConfig, train
from model.training.validation import OOF_NAME, load_oof
from tests.model.conftest import TINY_ARCH
from tests.model.test_training_smoke import tiny_data  # noqa: F401  (fixture)


def _fold(data: Path, out: Path, fold: int, seed: int = 3) -> Path:
    cfg = TrainConfig(
        data=data, out=out, epochs=1, steps_per_epoch=2, batch_size=2, warmup_steps=1,
        folds=2, fold=fold, seed=seed, split_seed=3, precision="fp32", device="cpu",
        architecture=dict(TINY_ARCH), crop=CropConfig(height=64, width=64),
        loss="dice-bce", ema_decay=0.9,
    )  # fmt: skip
    return train(cfg)


def test_two_packed_folds_make_an_ensemble_tuned_on_their_pooled_maps(
    tiny_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    runs = [_fold(tiny_data, tmp_path / "runs", k) for k in (0, 1)]
    packed = [pack_fold(r, tmp_path / "ens", f"fold-{k}") for k, r in enumerate(runs)]
    for k, p in enumerate(packed):
        m = read_manifest(p)
        assert m.n_members == 1
        assert m.members[0]["fold"] == k
        assert (p / OOF_NAME).is_file()
        assert m.training["packed_from"] == read_manifest(runs[k]).version
    with pytest.raises(ArtifactError, match="overwrite"):
        pack_fold(runs[0], tmp_path / "ens", "fold-0")  # never overwritten
    ensemble = build_ensemble(packed, tiny_data, tmp_path / "out")
    m = read_manifest(ensemble)
    assert m.n_members == 2
    assert [x["fold"] for x in m.members] == [0, 1]
    assert member_splits(m) == [(3, 2, 0), (3, 2, 1)]  # each member's own run's split
    assert [(r["split_seed"], r["folds"]) for r in m.training["members"]] == [(3, 2), (3, 2)]
    assert {"min_component_px", "min_peak", "flip_tta"} <= m.postprocessing.keys()
    oof = m.metrics["oof"]
    assert oof["n_patients"] == 4
    assert oof["n_controls"] == 2
    assert oof["folds"] == [0, 1]
    assert [c["fold"] for c in oof["crossfit"]["per_fold"]] == [0, 1]
    assert oof["frontier"]
    assert 0.0 <= oof["crossfit"]["dice"] <= 1.0
    assert m.threshold == oof["chosen"]["threshold"]
    pred = Predictor.from_artifact(ensemble, device="cpu")
    assert pred.n_members == 2
    assert pred.masks([np.zeros((64, 48), np.float32)])[0].shape == (64, 48)


def test_building_refuses_a_fold_given_twice(tiny_data: Path, tmp_path: Path) -> None:  # noqa: F811
    run = _fold(tiny_data, tmp_path / "runs", 0)
    with pytest.raises(ValueError, match="twice"):
        build_ensemble([run, run], tiny_data, tmp_path / "out")


def test_seeds_of_one_fold_count_once_with_their_maps_averaged(
    tiny_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    runs = [_fold(tiny_data, tmp_path / f"seed{seed}", 0, seed) for seed in (3, 4)]
    maps = [load_oof(r / OOF_NAME) for r in runs]
    assert any(
        not np.array_equal(maps[0]["plain"][name], maps[1]["plain"][name])
        for name in maps[0]["plain"]
    ), "two seeds should not predict alike"
    _, fold_ids, plain, tta, studies = pooled_maps(runs, tiny_data)
    assert fold_ids == [0] * len(maps[0]["plain"])  # each held-out study once
    for study, p, t in zip(studies, plain, tta, strict=True):
        name = study.name
        assert np.allclose(p, (maps[0]["plain"][name] + maps[1]["plain"][name]) / 2)
        assert np.allclose(t, (maps[0]["tta"][name] + maps[1]["tta"][name]) / 2)
    _, metrics = tune_pooled(runs, tiny_data)
    assert metrics["n_patients"] + metrics["n_controls"] == len(maps[0]["plain"])
