"""Do models trained on the same fold do better together? Averaged probabilities, scored.

Each artifact (all trained with the same seed and fold, so that none has seen the
validation fold) predicts that fold in fp32 on this machine. Every single model and every
combination of two or more (their probability maps averaged) is then scored with the
post-processing rule of `model/training/tuning.py`: the chosen setting's Dice and clean
controls, the cross-fitted Dice, and the best Dice among settings that keep at least 85 %
of the controls clean. docs/MODEL.md reports the output.

Usage: .venv/bin/python scripts/fold_ensembles.py --fold K ARTIFACT [ARTIFACT ...]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.artifact import read_manifest
from model.dataset import Study, find_studies, load_study, split
from model.predictor import Predictor
from model.training import tuning


def report(name: str, val: Sequence[Study], probs: Sequence[np.ndarray]) -> str:
    settings = tuning.grid(val, probs, False)
    chosen = tuning.choose(settings)
    clean = [s for s in settings if (s.controls_clean_fraction or 0.0) >= 0.85]
    best85 = max(clean, key=lambda s: s.dice) if clean else None
    return (
        f"| {name} | {chosen.dice:.3f} | {100 * (chosen.controls_clean_fraction or 0):.0f} % "
        f"| {tuning.crossfit(val, probs, probs):.3f} "
        f"| {f'{best85.dice:.3f}' if best85 else '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dmiai2023"))
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("artifacts", type=Path, nargs="+")
    args = parser.parse_args()
    for a in args.artifacts:
        t = read_manifest(a).training
        if (t.get("seed"), t.get("fold")) != (0, args.fold):
            parser.error(f"{a} was trained with seed {t.get('seed')}, fold {t.get('fold')}")
    _, val_files = split(find_studies(args.data), 0, 5, args.fold)
    val = [load_study(f) for f in val_files]
    images = [s.image for s in val]
    probs = {
        a.name: Predictor.from_artifact(a, device="cpu", precision="fp32").probabilities(images)
        for a in args.artifacts
    }
    print("| models | Dice (chosen) | clean controls | cross-fitted | best Dice, >= 85 % clean |")
    print("|---|---|---|---|---|")
    for k in range(1, len(probs) + 1):
        for combo in itertools.combinations(probs, k):
            avg = [np.mean([probs[n][i] for n in combo], axis=0) for i in range(len(val))]
            print(report(" + ".join(combo), val, avg), flush=True)


if __name__ == "__main__":
    main()
