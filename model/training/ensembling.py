"""From fold runs to an ensemble artifact, and post-processing chosen on held-out maps.

A fold run (`tumorseg train --fold K`) writes a single-network artifact with its held-out
fold's maps (`oof.npz`). `pack_fold` turns it into a compact one-member artifact (fp16
weights plus the maps) that can be kept in the repository while the other folds train.
`build_ensemble` takes the K packed (or unpacked) folds, pools their out-of-fold maps,
chooses the post-processing on them cross-fitted by fold (`oof_tuning`), and writes the
K-member ensemble with that choice, its cross-fitted score and the whole
Dice-clean-controls frontier in its manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import load_members, save_artifact, save_ensemble
from model.dataset import find_studies, held_out_by, load_study, split
from model.manifest import Manifest, read_manifest
from model.predictor import resolve_device, resolve_precision
from model.training import oof_tuning, validation
from model.training.tuning import Setting
from model.training.validation import OOF_NAME, load_oof


def pack_fold(artifact: Path, parent: Path, name: str) -> Path:
    """A one-member, fp16 copy of a fold run's artifact with its `oof.npz`, at
    `parent / name` (never overwritten).

    Raises:
        FileNotFoundError: The artifact has no out-of-fold maps.
    """
    if not (Path(artifact) / OOF_NAME).is_file():
        raise FileNotFoundError(f"{artifact} has no {OOF_NAME}: train it with this version")
    manifest, networks = load_members(artifact)
    packed = copy.deepcopy(manifest)
    packed.training = {**manifest.training, "packed_from": manifest.version}
    target = save_ensemble(networks, packed, parent, name=name, folds=[manifest.training["fold"]])
    shutil.copyfile(Path(artifact) / OOF_NAME, target / OOF_NAME)
    return target


def write_oof(
    artifact: Path, data: Path, out: Path, device: str = "auto", precision: str = "auto"
) -> Path:
    """Write the out-of-fold maps of an artifact trained before training wrote them: its
    held-out fold's probabilities, without and with flip TTA, in `oof.npz` form."""
    manifest, networks = load_members(artifact)
    t = manifest.training
    held_out = split(find_studies(data), *held_out_by(t))[1]
    studies = [load_study(f) for f in held_out]
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    scale = float(manifest.preprocessing.get("input_scale", 1.0))
    plain, tta = validation.held_out_maps(
        networks[0], dev, dtype, studies, scale, manifest.architecture
    )
    validation.save_oof(out, studies, plain, tta)
    return out


def pooled_maps(
    folds: Sequence[Path], data: Path, oof_files: Sequence[Path] | None = None
) -> tuple[list[Manifest], list[int], list[np.ndarray], list[np.ndarray], list[Any]]:
    """Each fold's manifest, and per held-out study: fold, plain map, TTA map, study.

    The maps are each fold's `oof.npz`, or `oof_files` in the same order. Runs that held
    out the same studies (seeds of one fold, `tumorseg train --split-seed`) count once:
    their maps are averaged, which is what the ensemble of those runs predicts there."""
    manifests = [read_manifest(f) for f in folds]
    oofs = list(oof_files) if oof_files is not None else [Path(f) / OOF_NAME for f in folds]
    files = find_studies(data)
    runs_by_split: dict[tuple[int, int, int], list[dict[str, dict[str, np.ndarray]]]] = {}
    for oof, m in zip(oofs, manifests, strict=True):
        if not oof.is_file():
            raise FileNotFoundError(f"no out-of-fold maps {oof}: write them with ensemble oof")
        maps = load_oof(oof)
        held_out = held_out_by(m.training)
        for f in split(files, *held_out)[1]:
            if f.name not in maps["plain"]:
                raise ValueError(f"{oof} has no map for held-out study {f.name}")
        runs_by_split.setdefault(held_out, []).append(maps)
    fold_ids: list[int] = []
    plain: list[np.ndarray] = []
    tta: list[np.ndarray] = []
    studies: list[Any] = []
    for held_out, runs in runs_by_split.items():
        for f in split(files, *held_out)[1]:
            fold_ids.append(held_out[2])
            plain.append(_mean([r["plain"][f.name] for r in runs]))
            tta.append(_mean([r["tta"][f.name] for r in runs]))
            studies.append(load_study(f))
    return manifests, fold_ids, plain, tta, studies


def _mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The pixel-wise mean of same-shape float32 maps, in float32."""
    return np.asarray(np.mean(np.stack(maps), axis=0, dtype=np.float32))


def postprocessing_of(chosen: Setting) -> dict[str, Any]:
    """A manifest's ``postprocessing`` block for a chosen setting (the second tier only
    when it has one)."""
    block: dict[str, Any] = {
        "min_component_px": chosen.min_component_px,
        "min_peak": chosen.min_peak,
        "flip_tta": chosen.flip_tta,
    }
    if chosen.small_peak > 0:
        block |= {"small_component_px": chosen.small_px, "small_peak": chosen.small_peak}
    return block


def tune_pooled(
    folds: Sequence[Path],
    data: Path,
    min_clean: float = 0.0,
    oof_files: Sequence[Path] | None = None,
    two_tier: bool = False,
) -> tuple[Setting, dict[str, Any]]:
    """Choose the post-processing on the folds' pooled out-of-fold maps (with
    `two_tier`, among two-tier rules too).

    Returns:
        (the setting chosen on all pooled maps, metrics: the cross-fitted score, the
        frontier without and with TTA, counts).
    """
    _, fold_ids, plain, tta, studies = pooled_maps(folds, data, oof_files)
    labels = [s.label for s in studies]
    is_patient = [s.is_patient for s in studies]
    tp = oof_tuning.ComponentTables(plain, labels, is_patient)
    tt = oof_tuning.ComponentTables(tta, labels, is_patient)
    # One fold: cross-fit on alternating halves instead.
    groups = fold_ids if len(set(fold_ids)) > 1 else [i % 2 for i in range(len(fold_ids))]
    plain_grid = oof_tuning.grid(tp, False, two_tier=two_tier)
    tta_grid = oof_tuning.grid(tt, True, two_tier=two_tier)
    chosen = oof_tuning.choose(plain_grid + tta_grid, min_clean)
    metrics = {
        "n_patients": int(sum(is_patient)),
        "n_controls": int(len(is_patient) - sum(is_patient)),
        "folds": sorted(set(fold_ids)),
        "min_clean": min_clean,
        "two_tier": two_tier,
        "chosen": asdict(chosen),
        "crossfit": oof_tuning.crossfit(tp, tt, groups, min_clean, two_tier),
        "frontier": [asdict(s) for s in oof_tuning.frontier(plain_grid)],
        "frontier_tta": [asdict(s) for s in oof_tuning.frontier(tta_grid)],
    }
    return chosen, metrics


def build_ensemble(
    folds: Sequence[Path],
    data: Path,
    parent: Path,
    min_clean: float = 0.0,
    two_tier: bool = False,
) -> Path:
    """Write the ensemble of `folds` (all of one architecture and input scale) with the
    post-processing chosen on their pooled out-of-fold maps.

    Raises:
        ValueError: The folds differ in architecture or preprocessing, or repeat a fold.
    """
    manifests = [read_manifest(f) for f in folds]
    first = manifests[0]
    for m in manifests[1:]:
        if m.architecture != first.architecture or m.preprocessing != first.preprocessing:
            raise ValueError("the folds differ in architecture or preprocessing")
    fold_numbers = [int(m.training["fold"]) for m in manifests]
    if len(set(fold_numbers)) != len(fold_numbers):
        raise ValueError(f"a fold appears twice: {fold_numbers}")
    chosen, metrics = tune_pooled(folds, data, min_clean, two_tier=two_tier)
    networks = [load_members(f)[1][0] for f in folds]
    manifest = Manifest(
        version="pending",
        trained=True,
        architecture=dict(first.architecture),
        preprocessing=dict(first.preprocessing),
        threshold=chosen.threshold,
        postprocessing=postprocessing_of(chosen),
        training={
            "members": [
                {
                    "fold": int(m.training["fold"]),
                    "version": m.version,
                    "steps": m.training["steps"],
                    # what the member held out, for `tumorseg evaluate --split validation`
                    "split_seed": held_out_by(m.training)[0],
                    "folds": held_out_by(m.training)[1],
                }
                for m in manifests
            ],
            "data_fingerprint": first.training.get("data_fingerprint"),
            "recipe": first.training.get("config", {}),
        },
        metrics={"oof": metrics},
    )
    return save_ensemble(networks, manifest, parent, folds=fold_numbers)


def retune(
    artifact: Path,
    data: Path,
    parent: Path,
    min_clean: float = 0.0,
    oof: Path | None = None,
    two_tier: bool = False,
) -> Path:
    """A new version of a single-network artifact: the same weights, with threshold,
    minimum size, peak rule and flip TTA chosen on its out-of-fold maps (`oof`, default
    its own `oof.npz`). The version ends in `-pp<hash of the rule>`, so it never takes
    the name of another artifact of the same weights; the manifest keeps the old choice
    under `training.retuned_from`.

    Raises:
        ValueError: `artifact` is an ensemble (build those with `build_ensemble`).
    """
    manifest, networks = load_members(artifact)
    if manifest.members:
        raise ValueError(f"{artifact} is an ensemble: choose its post-processing when building")
    chosen, metrics = tune_pooled([artifact], data, min_clean, [oof] if oof else None, two_tier)
    new = copy.deepcopy(manifest)
    new.threshold = chosen.threshold
    new.postprocessing = postprocessing_of(chosen)
    new.training["retuned_from"] = {
        "version": manifest.version,
        "threshold": manifest.threshold,
        "postprocessing": manifest.postprocessing,
    }
    new.metrics = {**manifest.metrics, "oof": metrics}
    rule = json.dumps({"threshold": new.threshold, **new.postprocessing}, sort_keys=True)
    suffix = "-pp" + hashlib.sha256(rule.encode()).hexdigest()[:6]
    return save_artifact(networks[0], new, parent, suffix=suffix)
