"""Post-processing cost per study: component removal inside the tumor box against
labelling the whole image (the previous implementation), in one run on the same maps.

On a GPU the network costs about 0.2 ms a study and everything else runs on the host, so
the host's post-processing bounds the predictor's throughput there. The maps are the
released model's probabilities on development studies (patients and controls); both
implementations must give the same masks, which the benchmark checks.

Usage: .venv/bin/python -m bench.postprocessing [--n 64] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.inference import DATA, machine, pick
from model.postprocessing import CONNECTIVITY, label_components, to_mask
from model.predictor import Predictor
from model.preprocessing import decode_image


def whole_image(prob: np.ndarray, threshold: float, min_px: int) -> np.ndarray:
    """The previous `to_mask`: label every pixel of the image."""
    mask = prob > threshold
    if min_px <= 1 or not mask.any():
        return mask
    labels, n = label_components(mask)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_px
    keep[0] = False
    return keep[labels]


def ms_per_study(fn, maps: list[np.ndarray], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        for p in maps:
            fn(p)
    return (time.perf_counter() - start) / (repeat * len(maps)) * 1000


def run(n: int, repeat: int) -> dict:
    predictor = Predictor.from_artifact(device="cpu")
    studies = pick(n, DATA)
    maps = predictor.probabilities([decode_image(s.image.read_bytes()) for s in studies])
    t, m = predictor.threshold, max(predictor.min_component_px, 2)
    for s, p in zip(studies, maps, strict=True):
        if not np.array_equal(to_mask(p, t, m), whole_image(p, t, m)):
            raise RuntimeError(f"{s.name}: the two implementations give different masks")
    before = ms_per_study(lambda p: whole_image(p, t, m), maps, repeat)
    after = ms_per_study(lambda p: to_mask(p, t, m), maps, repeat)
    return {
        "machine": machine(torch.device("cpu")),
        "model_version": predictor.version,
        "n_studies": len(maps),
        "threshold": t,
        "min_component_px": m,
        "connectivity": int(CONNECTIVITY.sum()) - 1,
        "whole_image_ms_per_study": before,
        "tumor_box_ms_per_study": after,
        "ratio": before / after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run(args.n, args.repeat)
    if args.json:
        print(json.dumps(r))
        return
    print(f"machine: {r['machine']}\nmodel: {r['model_version']}, {r['n_studies']} studies")
    print("| labelling | ms per study |\n|---|---|")
    print(f"| whole image (before) | {r['whole_image_ms_per_study']:.3f} |")
    print(f"| tumor box (now) | {r['tumor_box_ms_per_study']:.3f} |")
    print(f"ratio {r['ratio']:.2f}x, same masks on all {r['n_studies']} studies")


if __name__ == "__main__":
    main()
