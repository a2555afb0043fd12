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
        help="all studies, or only those the artifact's training held out (its seed and fold)",
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

    from model.dataset import find_studies, held_out_by, split
    from model.evaluation import (
        evaluate_folder,
        paired,
        read_csv,
        summarize,
        threshold_baseline,
        write_csv,
    )
    from model.manifest import ArtifactError, artifact_dir, read_manifest

    try:
        files = find_studies(args.data)
        held_out = None
        if args.split == "validation":
            training = read_manifest(artifact_dir(args.artifact)).training
            held_out = held_out_by(training)
            files = split(files, *held_out)[1]
    except (FileNotFoundError, ArtifactError, KeyError) as exc:
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
        scores = evaluate_folder(args.data, predict, progress=bar.update, validation_of=held_out)
    summary = {
        "model": name,
        **({} if members is None else {"members": members}),
        "split": args.split,
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
