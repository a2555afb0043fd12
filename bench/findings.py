"""What a study's findings cost beside the network, in one run.

The worker turns each predicted study into its findings (`model.findings.find`: the
mask, its metrics, lesions and MIP biomarkers, from one labelling of the components) and
its mask PNG (`model.png.encode_mask_png`), after each batch. This times both on the
released model's predictions of development studies (patients and controls), the
network per study on the same studies, and prints their ratios. For comparison it also
times the parts the way they were before `model.findings` (metrics and lesions each
labelling the mask again).

Usage: .venv/bin/python -m bench.findings [--n 32] [--repeat 5] [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.inference import DATA, machine, pick
from model.biomarkers import mip_biomarkers
from model.findings import find
from model.lesions import body_extent, find_lesions
from model.metrics import study_metrics
from model.png import encode_mask_png
from model.postprocessing import components
from model.predictor import Predictor
from model.preprocessing import decode_image


def best_ms_per_study(fn: Callable[[], object], n: int, repeat: int) -> float:
    """The fastest of `repeat` runs of `fn`, in ms per study."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1000 * best / n


def run(n: int = 32, repeat: int = 5, data: Path = DATA) -> dict[str, Any]:
    """Time the findings and the network on `n` studies; returns the figures."""
    images = [decode_image(f.image.read_bytes()) for f in pick(n, data)]
    predictor = Predictor.from_artifact(device="cpu")
    rule = predictor.rule
    start = time.perf_counter()
    predicted = {p.index: p for batch in predictor.iter_batches(images) for p in batch}
    network_ms = 1000 * (time.perf_counter() - start) / n
    pairs = [(images[i], predicted[i]) for i in range(n)]
    masks = [components(p.levels, rule).mask() for _, p in pairs]

    def findings() -> None:
        for image, p in pairs:
            find(image, p.levels, p.probabilities, rule)

    def separately() -> None:  # the mask, then metrics and lesions labelling it again
        for image, p in pairs:
            mask = components(p.levels, rule).mask()
            study_metrics(image, mask)
            body = body_extent(image)
            mip_biomarkers(find_lesions(mask, image, p.probabilities, None, body, 1 / 255), body)

    def encode() -> None:
        for mask in masks:
            encode_mask_png(mask)

    rows = {
        "findings_ms": best_ms_per_study(findings, n, repeat),
        "separately_ms": best_ms_per_study(separately, n, repeat),
        "encode_ms": best_ms_per_study(encode, n, repeat),
    }
    return {
        "machine": machine(),
        "model_version": predictor.version,
        "n_studies": n,
        "lesions": int(
            sum(len(find(img, p.levels, p.probabilities, rule).lesions) for img, p in pairs)
        ),  # fmt: skip
        "network_ms": network_ms,
        **rows,
        "findings_over_separately": rows["findings_ms"] / rows["separately_ms"],
        "findings_over_network": rows["findings_ms"] / network_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.n, args.repeat, args.data)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; {result['n_studies']} studies, {result['lesions']} lesions")
    for key in ("network_ms", "findings_ms", "separately_ms", "encode_ms"):
        print(f"{key:24s} {result[key]:8.2f} ms/study")
    print(f"findings / the parts separately  {result['findings_over_separately']:.2f}")
    print(f"findings / network               {result['findings_over_network']:.3f}")


if __name__ == "__main__":
    main()
