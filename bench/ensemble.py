"""What an ensemble artifact costs against a single network, in one run.

Times `Predictor.predict` (resampling, every member's forward passes with the artifact's
flip TTA, the mean, post-processing) on the same decoded development studies for: a
single-network artifact (the baseline), the ensemble with all its members, and the
ensemble's `fast` setting (its first member only, `TUMORSEG_MODEL_MEMBERS=1`). Each
setting runs `repeat` timed passes after a warm-up; the fastest counts. The ratios to the
baseline are the figures to keep: this machine's timings are noisy.

Usage: .venv/bin/python -m bench.ensemble --single ARTIFACT --ensemble ARTIFACT
       [--n 32] [--repeat 3] [--device cpu] [--data DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.findings import best_ms_per_study
from bench.inference import DATA, machine, pick
from model.predictor import Predictor, resolve_device
from model.preprocessing import decode_image


def _studies_per_s(pred: Predictor, images: list[Any], repeat: int) -> float:
    pred.masks(images[: 2 * pred.inference.batch_size])  # warm-up (kernels are made per shape)
    return 1000 / best_ms_per_study(lambda: pred.masks(images), len(images), repeat)


def run(
    single: Path, ensemble: Path, n: int, repeat: int, device: str, data: Path
) -> dict[str, Any]:
    """Studies per second of each setting, and each one's ratio to the single network."""
    images = [decode_image(f.image.read_bytes()) for f in pick(n, data)]
    settings = [("single network", single, 0), ("ensemble, all members", ensemble, 0)]
    settings.append(("ensemble, fast (first member)", ensemble, 1))
    rows = []
    for name, artifact, members in settings:
        pred = Predictor.from_artifact(artifact, device=device, members=members)
        rows.append(
            {
                "setting": name,
                "model_version": pred.version,
                "members": pred.n_members,
                "flip_tta": pred.inference.flip_tta,
                "batch": pred.inference.batch_size,
                "precision": str(pred.inference.autocast_dtype or "fp32"),
                "studies_per_s": _studies_per_s(pred, images, repeat),
            }
        )
    for r in rows:
        r["ratio_to_single"] = r["studies_per_s"] / rows[0]["studies_per_s"]
    return {
        "machine": machine(resolve_device(device)),
        "n_studies": len(images),
        "repeat": repeat,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=Path, required=True, help="a single-network artifact")
    parser.add_argument("--ensemble", type=Path, required=True, help="an ensemble artifact")
    parser.add_argument("--n", type=int, default=32, help="development studies (half patients)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the fastest counts")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--data", type=Path, default=DATA, help="folder in the DM i AI layout")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.single, args.ensemble, args.n, args.repeat, args.device, args.data)
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}\n{result['n_studies']} studies, "
          f"fastest of {result['repeat']} passes\n")  # fmt: skip
    print("| setting | model | members | flip TTA | batch | precision | studies/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r['setting']} | {r['model_version']} | {r['members']} | {r['flip_tta']} | "
            f"{r['batch']} | {r['precision']} | {r['studies_per_s']:.2f} | "
            f"{r['ratio_to_single']:.2f}x |"
        )


if __name__ == "__main__":
    main()
