"""Post-processing cost per study, each comparison in one run on the same maps:

1. component removal inside the tumor box against labelling the whole image (the
   previous implementation);
2. the predictor's copy out of each batch: probability maps copied to the host and
   thresholded there (the previous way) against masks thresholded on the device and
   copied out as uint8 levels, then components kept (`Predictor.iter_batches` now).

On a GPU the network costs about 0.2 ms a study and everything else runs on the host, so
the host's post-processing bounds the predictor's throughput there. The maps are the
released model's probabilities on development studies (patients and controls); both
sides of each comparison must give the same masks, which the benchmark checks.

Usage: .venv/bin/python -m bench.postprocessing [--n 64] [--repeat 5] [--device cpu]
    [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.inference import DATA, machine, pick
from model.postprocessing import CONNECTIVITY, Rule, components, label_components, to_mask
from model.predictor import Predictor, device_levels, host_arrays
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


def copy_out_ms(
    predictor: Predictor, maps: list[np.ndarray], repeat: int, peak: float
) -> dict[str, float]:
    """ms per study to bring each batch's full-size maps from the predictor's device to host
    masks: floats thresholded on the host, bool masks thresholded on the device, and the
    peak rule's uint8 levels from the device with its seeded components on the host. The
    three are alternated pass by pass; each figure is the median pass."""
    t, m = predictor.rule.threshold, predictor.rule.min_component_px
    size = predictor.inference.batch_size
    plain, with_peak = Rule(t, m), Rule(t, m, peak)
    batches = [
        [torch.from_numpy(p).to(predictor.device) for p in maps[k : k + size]]
        for k in range(0, len(maps), size)
    ]

    def floats(b: list[torch.Tensor]) -> list[np.ndarray]:
        return host_arrays(torch.cat([x.reshape(-1) for x in b]).clamp(0.0, 1.0), b)

    def on_host() -> list[np.ndarray]:
        return [to_mask(p, t, m) for b in batches for p in floats(b)]

    def on_device() -> list[np.ndarray]:
        return [components(lv, plain).mask() for b in batches for lv in device_levels(b, plain)]

    def peak_rule() -> list[np.ndarray]:
        return [
            components(lv, with_peak).mask() for b in batches for lv in device_levels(b, with_peak)
        ]

    for a, b in zip(on_host(), on_device(), strict=True):
        if not np.array_equal(a, b):
            raise RuntimeError("thresholding on the device gives different masks")
    for p, c in zip(maps, peak_rule(), strict=True):
        if not np.array_equal(to_mask(p, t, m, peak), c):
            raise RuntimeError("the peak rule on the device gives different masks")
    ways = {"host": on_host, "device": on_device, "peak": peak_rule}
    passes: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeat):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            passes[name].append((time.perf_counter() - start) / len(maps) * 1000)
    return {name: float(np.median(v)) for name, v in passes.items()}


def run(n: int, repeat: int, device: str = "cpu", data: Path = DATA) -> dict:
    predictor = Predictor.from_artifact(device=device)
    studies = pick(n, data)
    maps = predictor.probabilities([decode_image(s.image.read_bytes()) for s in studies])
    t, m = predictor.rule.threshold, max(predictor.rule.min_component_px, 2)
    for s, p in zip(studies, maps, strict=True):
        if not np.array_equal(to_mask(p, t, m), whole_image(p, t, m)):
            raise RuntimeError(f"{s.name}: the two implementations give different masks")
    before = ms_per_study(lambda p: whole_image(p, t, m), maps, repeat)
    after = ms_per_study(lambda p: to_mask(p, t, m), maps, repeat)
    peak = predictor.rule.min_peak if predictor.rule.min_peak is not None else 0.9
    out = copy_out_ms(predictor, maps, repeat, peak)
    return {
        "machine": machine(predictor.device),
        "device": str(predictor.device),
        "batch_size": predictor.inference.batch_size,
        "model_version": predictor.version,
        "n_studies": len(maps),
        "threshold": t,
        "min_component_px": m,
        "connectivity": int(CONNECTIVITY.sum()) - 1,
        "whole_image_ms_per_study": before,
        "tumor_box_ms_per_study": after,
        "ratio": before / after,
        "host_threshold_ms_per_study": out["host"],
        "device_threshold_ms_per_study": out["device"],
        "copy_out_ratio": out["host"] / out["device"],
        "min_peak": peak,
        "peak_rule_ms_per_study": out["peak"],
        "peak_rule_ratio": out["peak"] / out["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="the predictor's: cpu, cuda, auto")
    parser.add_argument("--data", type=Path, default=DATA, help="development data folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run(args.n, args.repeat, args.device, args.data)
    if args.json:
        print(json.dumps(r))
        return
    print(f"machine: {r['machine']}\nmodel: {r['model_version']}, {r['n_studies']} studies")
    print("| labelling | ms per study |\n|---|---|")
    print(f"| whole image (before) | {r['whole_image_ms_per_study']:.3f} |")
    print(f"| tumor box (now) | {r['tumor_box_ms_per_study']:.3f} |")
    print(f"ratio {r['ratio']:.2f}x, same masks on all {r['n_studies']} studies")
    print(f"\ncopy out, {r['device']}, batches of {r['batch_size']}, median of passes")
    print("| maps to masks | ms per study |\n|---|---|")
    print(
        f"| floats out, threshold on the host (before) | {r['host_threshold_ms_per_study']:.3f} |"
    )
    print(f"| threshold on the device, bool out (now) | {r['device_threshold_ms_per_study']:.3f} |")
    print(f"ratio {r['copy_out_ratio']:.2f}x, same masks on all {r['n_studies']} studies")
    print(f"| + peak rule {r['min_peak']}: uint8 levels out | {r['peak_rule_ms_per_study']:.3f} |")
    print(f"peak rule / bool masks: {r['peak_rule_ratio']:.2f}x")


if __name__ == "__main__":
    main()
