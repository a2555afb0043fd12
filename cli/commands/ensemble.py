"""`tumorseg ensemble`: keep fold runs, tune on their pooled out-of-fold maps, build.

tumorseg ensemble pack RUN --into DIR --name fold-K
tumorseg ensemble tune FOLD [FOLD ...] --data DATA [--min-clean F] [--json]
tumorseg ensemble build FOLD [FOLD ...] --data DATA --out DIR [--min-clean F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    pack = sub.add_parser("pack", help="keep a fold run as a one-member fp16 artifact + its maps")
    pack.add_argument("run", type=Path, help="artifact written by tumorseg train")
    pack.add_argument("--into", type=Path, required=True, help="parent folder of the folds")
    pack.add_argument("--name", required=True, help="folder name, e.g. fold-0")
    oof = sub.add_parser("oof", help="write an artifact's held-out maps (for older artifacts)")
    oof.add_argument("artifact", type=Path)
    oof.add_argument("--data", type=Path, required=True, help="the folder it was trained on")
    oof.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    for name, text in (
        ("tune", "choose the post-processing on pooled out-of-fold maps and report it"),
        ("build", "write the ensemble of the folds with that choice"),
        ("retune", "a new version of one network with that choice (same weights)"),
    ):
        p = sub.add_parser(name, help=text)
        if name == "retune":
            p.add_argument("artifact", type=Path, help="a single-network artifact")
        else:
            p.add_argument("folds", type=Path, nargs="+", help="fold artifacts (packed or not)")
        p.add_argument("--data", type=Path, required=True, help="the folder the folds used")
        p.add_argument(
            "--min-clean",
            type=float,
            default=0.0,
            help="best Dice among settings that leave at least this share of controls clean",
        )
        if name == "tune":
            p.add_argument("--json", action="store_true", help="print one JSON object")
        else:
            p.add_argument("--out", type=Path, required=True, help="parent of the new artifact")
        if name == "retune":
            p.add_argument("--oof", type=Path, default=None, help="maps (default: its oof.npz)")


def _frontier_table(rows: list[dict[str, Any]]) -> str:
    lines = ["clean controls  Dice   threshold  min px  min peak"]
    for r in rows:
        lines.append(
            f"{r['controls_clean_fraction']:>14.0%}  {r['dice']:.3f}  {r['threshold']:>9.2f}"
            f"  {r['min_component_px']:>6}  {r['min_peak']:>8.2f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Pack, tune or build; 2 on bad input."""
    from model.manifest import ArtifactError
    from model.training.ensembling import build_ensemble, pack_fold, retune, tune_pooled, write_oof

    if not 0.0 <= getattr(args, "min_clean", 0.0) <= 1.0:
        print(f"tumorseg ensemble: --min-clean must be in [0, 1], got {args.min_clean}")
        return 2
    try:
        if args.action == "pack":
            print(f"fold: {pack_fold(args.run, args.into, args.name)}")
        elif args.action == "tune":
            chosen, metrics = tune_pooled(args.folds, args.data, args.min_clean)
            if args.json:
                print(json.dumps(metrics, indent=2))
            else:
                cf = metrics["crossfit"]
                print(
                    f"{metrics['n_patients']} patients, {metrics['n_controls']} controls, "
                    f"folds {metrics['folds']}\nchosen on all: {metrics['chosen']}\n"
                    f"cross-fitted: Dice {cf['dice']:.3f}, "
                    f"clean controls {cf['controls_clean_fraction']:.0%}\n"
                    f"frontier (no TTA):\n{_frontier_table(metrics['frontier'])}"
                )
        elif args.action == "oof":
            print(f"maps: {write_oof(args.artifact, args.data, args.out)}")
        elif args.action == "retune":
            new = retune(args.artifact, args.data, args.out, args.min_clean, args.oof)
            print(f"artifact: {new}")
        else:
            print(f"ensemble: {build_ensemble(args.folds, args.data, args.out, args.min_clean)}")
    except (ArtifactError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"tumorseg ensemble: {exc}")
        return 2
    return 0
