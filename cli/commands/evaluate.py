"""`tumorseg evaluate`: score an artifact (or the threshold baseline) on a labelled folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder in the DM i AI layout")
    parser.add_argument(
        "--artifact", type=Path, default=None, help="artifact folder (default: the released one)"
    )
    parser.add_argument(
        "--baseline",
        choices=["threshold"],
        default=None,
        help="score the competition's gray < 50 baseline instead of a model",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=Path("out/evaluation.csv"),
        help="per-study CSV (default out/evaluation.csv)",
    )
    parser.add_argument(
        "--split",
        choices=["all", "validation"],
        default="all",
        help="all studies, or only those the artifact's training held out (its seed and "
        "fold); an ensemble's: each study by the members that held it out",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the best for the device")
    parser.add_argument(
        "--members",
        type=_members,
        default=0,
        help="an ensemble's members to run, the first ones: 0 = all (default), 1 = fast",
    )
    parser.add_argument(
        "--paired-with",
        type=Path,
        default=None,
        help="per-study CSV of another evaluation on the same studies: add a paired comparison",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _members(text: str) -> int:
    """argparse type of `--members`: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Score the artifact (or the baseline) and print the summary; 2 on bad input."""
    from tqdm import tqdm

    from model.dataset import find_studies
    from model.evaluation import (
        evaluate_files,
        evaluate_folder,
        paired,
        read_csv,
        summarize,
        threshold_baseline,
        write_csv,
    )
    from model.held_out import held_out_groups, member_splits, scored_by
    from model.manifest import ArtifactError, artifact_dir, read_manifest

    try:
        files = find_studies(args.data)
        splits = None
        if args.split == "validation":
            # each network's held-out studies; with --members N, those of the first N
            splits = member_splits(read_manifest(artifact_dir(args.artifact)))
            if args.baseline is None and args.members:
                splits = splits[: args.members]
            groups = held_out_groups(files, splits)
            order = {f.name: i for i, f in enumerate(files)}
            files = sorted((f for _, g in groups for f in g), key=lambda f: order[f.name])
            if not files:
                raise ArtifactError(f"no network of the artifact held out a study of {args.data}")
    except (FileNotFoundError, ArtifactError) as exc:
        print(f"tumorseg evaluate: {exc}")
        return 2
    other = None
    if args.paired_with is not None:
        try:
            other = read_csv(args.paired_with)
        except (OSError, KeyError, ValueError) as exc:
            print(f"tumorseg evaluate: --paired-with {args.paired_with}: {exc}")
            return 2
    members: int | None = None  # networks run, for a model
    if args.baseline == "threshold":
        name = "threshold baseline (gray < 50)"

        def predict(images: list[np.ndarray]) -> list[np.ndarray]:
            return [threshold_baseline(i) for i in images]
    else:
        from model.held_out import evaluate_held_out
        from model.predictor import Predictor

        try:
            predictor = Predictor.from_artifact(
                args.artifact, args.device, args.batch_size, args.precision, members=args.members
            )
        except ArtifactError as exc:
            print(f"tumorseg evaluate: {exc}")
            return 2
        name = predictor.version
        members = predictor.n_members
        predict = predictor.masks
    with tqdm(total=len(files), desc="evaluate", unit="study", disable=args.json) as bar:
        if splits is None:
            scores = evaluate_folder(args.data, predict, progress=bar.update)
        elif members is None:  # the baseline: the same rule on every held-out study
            scores = evaluate_files(files, predict, progress=bar.update)
        else:
            scores = evaluate_held_out(args.data, predictor, splits, progress=bar.update)
    summary = {
        "model": name,
        **({} if members is None else {"members": members}),
        "split": args.split,
        **({} if splits is None else {"scored_by": scored_by(groups)}),
        **summarize(scores),
        "csv": str(args.csv),
    }
    write_csv(scores, args.csv)
    if other is not None:
        try:
            summary["paired"] = paired(scores, other)
        except ValueError as exc:
            print(f"tumorseg evaluate: --paired-with {args.paired_with}: {exc}")
            return 2
    if args.json:
        print(json.dumps(summary))
        return 0
    for key, value in summary.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:>24}: {shown}")
    return 0
