"""What the lesion rows and MIP biomarkers add to a study's measuring, in one run.

The worker measures each predicted study on the host: its metrics
(`model.metrics.study_metrics`), its lesions and biomarkers (`model.lesions`,
`model.biomarkers`) and its mask PNG (`model.png.encode_mask_png`). On a CPU this runs
after the chunk's last batch, so it adds to the chunk's time. This times each part on the
released model's masks of development studies (patients and controls), and the network
per study on the same studies, and prints their ratios.

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
from model.lesions import body_extent, find_lesions
from model.metrics import study_metrics
from model.png import encode_mask_png
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
    """Time the measuring steps and the network on `n` studies; returns the figures."""
    images = [decode_image(f.image.read_bytes()) for f in pick(n, data)]
    predictor = Predictor.from_artifact(device="cpu")
    start = time.perf_counter()
    predicted = {i: (m, q) for i, m, q in predictor.iter_predict_with_probabilities(images)}
    network_ms = 1000 * (time.perf_counter() - start) / n
    pairs = [(images[i], *predicted[i]) for i in range(n)]

    def metrics() -> None:
        for image, mask, _ in pairs:
            study_metrics(image, mask)

    def findings() -> None:
        for image, mask, quantized in pairs:
            body = body_extent(image)
            found = find_lesions(mask, image, quantized, None, body, probability_scale=1 / 255)
            mip_biomarkers(found, body)

    def encode() -> None:
        for _, mask, _ in pairs:
            encode_mask_png(mask)

    rows = {
        "metrics_ms": best_ms_per_study(metrics, n, repeat),
        "lesions_biomarkers_ms": best_ms_per_study(findings, n, repeat),
        "encode_ms": best_ms_per_study(encode, n, repeat),
    }
    return {
        "machine": machine(),
        "n_studies": n,
        "lesions": int(sum(len(find_lesions(m, img)) for img, m, _ in pairs)),
        "network_ms": network_ms,
        **rows,
        "findings_over_metrics": rows["lesions_biomarkers_ms"] / rows["metrics_ms"],
        "findings_over_network": rows["lesions_biomarkers_ms"] / network_ms,
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
    for key in ("network_ms", "metrics_ms", "lesions_biomarkers_ms", "encode_ms"):
        print(f"{key:24s} {result[key]:8.2f} ms/study")
    print(f"lesions+biomarkers / metrics  {result['findings_over_metrics']:.2f}")
    print(f"lesions+biomarkers / network  {result['findings_over_network']:.3f}")


if __name__ == "__main__":
    main()
