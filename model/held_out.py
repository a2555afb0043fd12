"""Scoring an artifact on the studies its training held out, network by network.

A single network held out one fold of the data (its manifest's ``training`` block). An
ensemble's members each held out their own: the manifest lists each member's fold, and
``training.members`` each member's run (an ensemble built before the runs' split was
recorded there shares its first run's split seed and folds, ``training.recipe``). A study
is scored by the members that held it out, their probabilities averaged as the ensemble
averages them, under the artifact's post-processing; a study no member held out is not
scored (every member saw it in training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model.dataset import StudyFile, find_studies, held_out_by, split
from model.evaluation import StudyScore, evaluate_files
from model.manifest import ArtifactError, Manifest
from model.predictor import Predictor

#: (split seed, folds, fold) of one training run: what `model.dataset.split` needs.
Split = tuple[int, int, int]


def member_splits(manifest: Manifest) -> list[Split | None]:
    """What each network of the artifact held out, in member order (one entry for a
    single network): its (split seed, folds, fold), None where the manifest does not say.

    Raises:
        ArtifactError: No network's held-out split can be told, or the manifest's two
            lists of members disagree on a fold.
    """
    training = manifest.training
    if not manifest.members:
        try:
            return [held_out_by(training)]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{manifest.version} does not say which studies its training held out: its "
                f"manifest's training block has no {exc} (split seed, folds and fold)"
            ) from exc
    listed, given = training.get("members"), training.get("recipe")
    runs: list[Any] = listed if isinstance(listed, list) else []
    recipe: dict[str, Any] = given if isinstance(given, dict) else {}
    splits: list[Split | None] = []
    for k, member in enumerate(manifest.members):
        run = runs[k] if k < len(runs) and isinstance(runs[k], dict) else {}
        splits.append(_member_split(manifest, k, member.get("fold"), run, recipe))
    if not any(splits):
        raise ArtifactError(
            f"{manifest.version} does not say which studies its members held out: none of its "
            f"{manifest.n_members} members has a fold with a split seed and a number of folds"
        )
    return splits


def _member_split(
    manifest: Manifest, k: int, fold: Any, run: dict[str, Any], recipe: dict[str, Any]
) -> Split | None:
    """Member ``k``'s split: its own run's seed and folds, else the recipe's."""
    if fold is None:
        return None
    if "fold" in run and run["fold"] != fold:
        raise ArtifactError(
            f"{manifest.version}: member {k + 1} holds out fold {fold} in members but "
            f"fold {run['fold']} in training.members"
        )
    source = run if "folds" in run and ("split_seed" in run or "seed" in run) else recipe
    try:
        return held_out_by({**source, "fold": fold})
    except (KeyError, TypeError, ValueError):
        return None


def scored_by(groups: Sequence[tuple[tuple[int, ...], list[StudyFile]]]) -> dict[str, int]:
    """How many studies each set of members scores, e.g. ``{"1": 103, "2+3": 5}`` (members
    counted from 1, as ``member-K.safetensors``)."""
    return {"+".join(str(k + 1) for k in members): len(group) for members, group in groups}


def held_out_groups(
    files: Sequence[StudyFile], splits: Sequence[Split | None]
) -> list[tuple[tuple[int, ...], list[StudyFile]]]:
    """The studies some member held out, grouped by the members (indices into ``splits``)
    that held them out, in the order of ``files`` within each group."""
    by_study: dict[str, list[int]] = {}
    for k, held_out in enumerate(splits):
        if held_out is None:
            continue
        for f in split(list(files), *held_out)[1]:
            by_study.setdefault(f.name, []).append(k)
    groups: dict[tuple[int, ...], list[StudyFile]] = {}
    for f in files:
        if f.name in by_study:
            groups.setdefault(tuple(by_study[f.name]), []).append(f)
    return list(groups.items())


def evaluate_held_out(
    data_dir: Path,
    predictor: Predictor,
    splits: Sequence[Split | None],
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> list[StudyScore]:
    """Score each study that a network of ``predictor`` held out by those networks alone.

    Args:
        data_dir: Folder in the DM i AI layout.
        predictor: The artifact's networks (``splits[k]`` is what network ``k`` held out)
            and its post-processing.
        splits: `member_splits` of the artifact, at most one per network of ``predictor``.
        chunk: Studies decoded and predicted together.
        progress: Called with the number of studies done after each chunk.

    Returns:
        One score per study held out by some network, in the data set's order.

    Raises:
        ValueError: More splits than networks.
    """
    if len(splits) > predictor.n_members:
        raise ValueError(f"{len(splits)} splits for {predictor.n_members} networks")
    files = find_studies(data_dir)
    order = {f.name: i for i, f in enumerate(files)}
    scores: list[StudyScore] = []
    for members, group in held_out_groups(files, splits):
        chosen = predictor.of_members(members)
        scores += evaluate_files(group, chosen.masks, chunk, progress)
    return sorted(scores, key=lambda s: order[s.name])
