"""`tumorseg ensemble`: keep fold runs, tune on their pooled out-of-fold maps, build.

tumorseg ensemble pack RUN --into DIR --name fold-K
tumorseg ensemble tune FOLD [FOLD ...] --data DATA [--min-clean F] [--json]
tumorseg ensemble build FOLD [FOLD ...] --data DATA --out DIR [--min-clean F]
tumorseg ensemble compare --a FOLD... --b FOLD... --data DATA [--floors F...] [--json]
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
        p.add_argument(
            "--two-tier",
            action="store_true",
            help="choose among two-tier rules too: large components with a moderate peak, "
            "or small ones with a very high peak",
        )
    cmp = sub.add_parser(
        "compare",
        help="recipe B against recipe A on their pooled out-of-fold maps, paired by study",
    )
    cmp.add_argument("--a", type=Path, nargs="+", required=True, help="arm A's fold runs")
    cmp.add_argument("--b", type=Path, nargs="+", required=True, help="arm B's fold runs")
    cmp.add_argument("--data", type=Path, required=True, help="the folder the folds used")
    cmp.add_argument(
        "--floors", type=float, nargs="+", default=[0.8, 0.85], help="clean-controls floors"
    )
    cmp.add_argument(
        "--fp-budget",
        type=float,
        nargs="+",
        default=[0.25],
        help="false-positive components per control at which lesion recall is read",
    )
    cmp.add_argument("--two-tier", action="store_true", help="two-tier rules in both arms")
    cmp.add_argument(
        "--two-tier-b",
        action="store_true",
        help="two-tier rules in arm B only (the same folds in both arms: one rule family "
        "against the other)",
    )
    cmp.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")


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
            chosen, metrics = tune_pooled(
                args.folds, args.data, args.min_clean, two_tier=args.two_tier
            )
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
            new = retune(
                args.artifact, args.data, args.out, args.min_clean, args.oof, args.two_tier
            )
            print(f"artifact: {new}")
        elif args.action == "compare":
            _compare(args)
        else:
            built = build_ensemble(args.folds, args.data, args.out, args.min_clean, args.two_tier)
            print(f"ensemble: {built}")
    except (ArtifactError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"tumorseg ensemble: {exc}")
        return 2
    return 0


def _compare(args: argparse.Namespace) -> None:
    from model.training.comparison import compare, load_arm

    a = load_arm("a", args.a, args.data)
    b = load_arm("b", args.b, args.data)
    result = compare(
        a,
        b,
        args.floors,
        args.fp_budget,
        args.two_tier,
        args.boot,
        two_tier_b=args.two_tier or args.two_tier_b,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['n_patients']} patients, {result['n_controls']} controls (B minus A)")
    print("floor  Dice A  Dice B  ΔDice [95 % CI]            clean A  clean B  better/worse")
    for floor, r in result["floors"].items():
        lo, hi = r["delta_dice_ci95"]
        print(
            f"{floor:>5}  {r['dice_a']:.3f}   {r['dice_b']:.3f}   {r['delta_dice']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}]      {r['clean_a']:.0%}      {r['clean_b']:.0%}     "
            f"{r['patients_better']}/{r['patients_worse']}"
        )
    for budget, r in result["recall"].items():
        print(
            f"lesion recall (>= 50 px) at <= {budget} FP components per control: "
            f"A {r['a']['recall']:.1%}, B {r['b']['recall']:.1%}"
        )
