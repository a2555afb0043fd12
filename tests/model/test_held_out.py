"""Scoring an artifact on what its networks held out: each study by the members that held
it out, their probabilities averaged as the ensemble averages them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from model.artifact import save_ensemble
from model.dataset import find_studies, split
from model.evaluation import evaluate_files
from model.held_out import evaluate_held_out, held_out_groups, member_splits, scored_by
from model.manifest import ArtifactError, Manifest, read_manifest, released_artifact_dir
from model.network import build_network
from model.predictor import Predictor
from tests.conftest import SAMPLE_IMGS, SAMPLE_LABELS
from tests.model.conftest import TINY_ARCH

#: The split of the small data set: seed 3, two folds. Fold 0 holds out two patients and
#: the control, fold 1 the third patient.
SEED, FOLDS = 3, 2


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """Three labelled patients and a control from samples/, in the DM i AI layout."""
    root = tmp_path / "data"
    for sub in ("patients/imgs", "patients/labels", "controls/imgs"):
        (root / sub).mkdir(parents=True)
    for n in ("000", "001", "002"):
        shutil.copy(SAMPLE_IMGS / f"patient_{n}.png", root / "patients/imgs")
        shutil.copy(SAMPLE_LABELS / f"segmentation_{n}.png", root / "patients/labels")
    shutil.copy(SAMPLE_IMGS / "control_003.png", root / "controls/imgs")
    return root


def constant(logit: float) -> torch.nn.Module:
    """A tiny network whose logit is ``logit`` at every pixel."""
    network = build_network(TINY_ARCH)
    with torch.no_grad():
        for p in network.parameters():
            p.zero_()
        dict(network.named_parameters())["model.2.conv.bias"].fill_(logit)
    return network


def ensemble(
    parent: Path,
    networks: list[torch.nn.Module],
    folds: list[int | None],
    training: dict[str, Any],
    threshold: float = 0.5,
) -> Path:
    manifest = Manifest(
        version="pending",
        trained=False,
        architecture=dict(TINY_ARCH),
        threshold=threshold,
        training=training,
    )
    return save_ensemble(networks, manifest, parent, folds=folds)


def runs(*folds: int) -> dict[str, Any]:
    """A training block as `ensemble build` writes it: each member's run and its split."""
    return {
        "members": [
            {"fold": k, "version": f"run-{k}", "steps": 1, "split_seed": SEED, "folds": FOLDS}
            for k in folds
        ]
    }


def _predictor(artifact: Path) -> Predictor:
    return Predictor.from_artifact(artifact, device="cpu", batch_size=2, precision="fp32")


def test_each_study_is_scored_by_the_member_that_held_it_out(
    small_data: Path, tmp_path: Path
) -> None:
    # member 1 calls every pixel tumor, member 2 none: the masks tell who scored a study
    artifact = ensemble(tmp_path, [constant(5.0), constant(-5.0)], [0, 1], runs(0, 1))
    files = find_studies(small_data)
    fold0 = {f.name for f in split(files, SEED, FOLDS, 0)[1]}
    assert len(fold0) == 3
    splits = member_splits(read_manifest(artifact))
    assert splits == [(SEED, FOLDS, 0), (SEED, FOLDS, 1)]
    assert scored_by(held_out_groups(files, splits)) == {"1": 3, "2": 1}

    scores = evaluate_held_out(small_data, _predictor(artifact), splits)
    assert [s.name for s in scores] == [f.name for f in files]  # each once, in data order
    for s in scores:
        assert (s.predicted_px > 0) == (s.name in fold0), s  # member 1's studies only


def test_seeds_of_one_fold_score_its_studies_with_their_mean(
    small_data: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    nets = [build_network(TINY_ARCH) for _ in range(3)]
    artifact = ensemble(tmp_path, nets, [0, 0, 1], runs(0, 0, 1))
    predictor = _predictor(artifact)
    splits = member_splits(read_manifest(artifact))
    scores = {s.name: s for s in evaluate_held_out(small_data, predictor, splits)}
    files = find_studies(small_data)
    fold0 = split(files, SEED, FOLDS, 0)[1]

    def alone(*members: int) -> dict[str, Any]:
        chosen = predictor.of_members(members)
        return {s.name: s for s in evaluate_files(fold0, chosen.masks)}

    both, first = alone(0, 1), alone(0)
    assert all(scores[name] == both[name] for name in both)  # the mean of the two seeds
    assert any(both[name] != first[name] for name in both)  # which is not the first alone
    (fold1,) = split(files, SEED, FOLDS, 1)[1]
    chosen = predictor.of_members([2])
    assert scores[fold1.name] == evaluate_files([fold1], chosen.masks)[0]


def test_the_released_ensemble_says_what_each_member_held_out() -> None:
    manifest = read_manifest(released_artifact_dir())
    recorded = [(m["split_seed"], m["folds"], m["fold"]) for m in manifest.training["members"]]
    assert recorded == [(0, 5, k) for k in range(5)]
    assert member_splits(manifest) == recorded


def test_an_ensemble_built_before_splits_were_recorded_holds_out_its_recipe_s_folds() -> None:
    # the previous release: its members share the recipe's seed and number of folds
    root = (
        released_artifact_dir().parents[1] / "superseded" / "attention-unet-ens-20261203-05161575"
    )
    manifest = read_manifest(root)
    assert "split_seed" not in manifest.training["members"][0]
    assert member_splits(manifest) == [(0, 5, k) for k in range(5)]


def test_a_single_network_holds_out_its_training_fold() -> None:
    manifest = Manifest("v", True, dict(TINY_ARCH), training={"seed": 7, "folds": 5, "fold": 2})
    assert member_splits(manifest) == [(7, 5, 2)]
    newer = {"seed": 1, "split_seed": 7, "folds": 5, "fold": 2}
    assert member_splits(Manifest("v", True, dict(TINY_ARCH), training=newer)) == [(7, 5, 2)]


def test_an_artifact_that_does_not_say_what_it_held_out_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not say which studies its training held out"):
        member_splits(Manifest("v", True, dict(TINY_ARCH), training={"steps": 3}))
    nets = [constant(1.0), constant(1.0)]
    no_folds = ensemble(tmp_path / "a", nets, [None, None], {})
    with pytest.raises(ArtifactError, match="none of its 2 members"):
        member_splits(read_manifest(no_folds))
    no_seed = ensemble(tmp_path / "b", nets, [0, 1], {"members": [{"fold": 0}, {"fold": 1}]})
    with pytest.raises(ArtifactError, match="none of its 2 members"):
        member_splits(read_manifest(no_seed))
    crossed = ensemble(tmp_path / "c", nets, [0, 1], runs(1, 0))
    with pytest.raises(ArtifactError, match="fold 0 in members but fold 1"):
        member_splits(read_manifest(crossed))
