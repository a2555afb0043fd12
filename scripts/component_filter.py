"""Can a second stage that scores each predicted component tell tumors from false positives?

The released model's mask at its own threshold is cut into 8-connected components. Each
gets a few features the crop-trained network cannot see or does not output: its size,
peak and mean probability, its uptake (mean and peak of the preprocessed image) absolute
and relative to the study's body, its position in the body (height, distance from the
midline) and its shape. A logistic regression on those features keeps or drops each
component. Scored on the validation fold that neither the network nor the filter saw:

* trained on the training folds' components (the network saw those studies, so its
  components there are cleaner and more confident than on unseen ones);
* cross-fitted within the validation fold (grouped by study, 5 ways): honest but small.

Each is swept over its score cut and set against the released rule's own knobs (minimum
component size, minimum component peak probability) on the same masks, as the best
patient Dice at each level of clean controls.

Usage::

    .venv/bin/python scripts/component_filter.py --data ../shared/data/dmiai2023
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from model.dataset import Study, find_studies, load_study, split
from model.metrics import body_mask
from model.postprocessing import CONNECTIVITY
from model.predictor import Predictor

FEATURES = (
    "log area", "peak prob", "mean prob", "mean uptake", "peak uptake",
    "peak / body p99", "mean / body median", "height in body", "off midline",
    "box fill", "log box h/w", "components in study",
)  # fmt: skip
LEVELS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def component_rows(
    prob: np.ndarray, image: np.ndarray, label: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per component: features (n, len(FEATURES)), size and overlap with the expert mask."""
    labels, n = ndimage.label(prob > threshold, structure=CONNECTIVITY)
    if n == 0:
        return np.zeros((0, len(FEATURES))), np.zeros(0), np.zeros(0)
    idx = np.arange(1, n + 1)
    size = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    overlap = np.bincount(labels[label].ravel(), minlength=n + 1)[1:].astype(float)
    body = body_mask(image)
    rows, cols = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
    top, bottom = (rows[0], rows[-1]) if rows.size else (0, image.shape[0] - 1)
    left, right = (cols[0], cols[-1]) if cols.size else (0, image.shape[1] - 1)
    body_values = image[body] if body.any() else image.ravel()
    p99, median = np.percentile(body_values, 99) + 1e-6, np.median(body_values) + 1e-6
    centres = np.array(ndimage.center_of_mass(np.ones_like(prob), labels, idx))
    boxes = ndimage.find_objects(labels)
    box_h = np.array([b[0].stop - b[0].start for b in boxes], dtype=float)
    box_w = np.array([b[1].stop - b[1].start for b in boxes], dtype=float)
    mean_uptake = np.asarray(ndimage.mean(image, labels, idx))
    peak_uptake = np.asarray(ndimage.maximum(image, labels, idx))
    feats = np.stack(
        [
            np.log(size),
            np.asarray(ndimage.maximum(prob, labels, idx)),
            np.asarray(ndimage.mean(prob, labels, idx)),
            mean_uptake,
            peak_uptake,
            peak_uptake / p99,
            mean_uptake / median,
            (centres[:, 0] - top) / max(bottom - top, 1),
            np.abs(centres[:, 1] - (left + right) / 2) / max(right - left, 1),
            size / (box_h * box_w),
            np.log(box_h / box_w),
            np.full(n, np.log(n)),
        ],
        1,
    )
    return feats, size, overlap


def study_components(predictor: Predictor, studies: list[Study], threshold: float) -> list[dict]:
    """Per study: patient or not, its expert tumor pixels, and its components' features,
    sizes and overlaps with the expert mask (`component_rows`) at `threshold`."""
    probs = predictor.probabilities([s.image for s in studies])
    out = []
    for s, p in zip(studies, probs, strict=True):
        feats, size, overlap = component_rows(p, s.image, s.label, threshold)
        out.append(
            {
                "patient": s.is_patient,
                "true_px": int(s.label.sum()),
                "x": feats,
                "size": size,
                "overlap": overlap,
            }  # fmt: skip
        )
    return out


def study_features(s: dict) -> np.ndarray:
    """A study's gate features: its most probable component's size, peak and mean
    probability and relative uptake, the predicted area, and how many components."""
    if not len(s["size"]):
        return np.zeros(6)
    top = int(np.argmax(s["x"][:, 1] + 1e-3 * s["x"][:, 0]))
    return np.array([*s["x"][top, [0, 1, 2, 5]], np.log(s["size"].sum()), np.log(len(s["size"]))])


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> tuple[np.ndarray, ...]:
    """Standardised L2 logistic regression by L-BFGS; returns (mean, std, weights, bias)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach().numpy(), b.detach().numpy()


def predict_logistic(model: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    mu, sd, w, b = model
    return 1 / (1 + np.exp(-(((x - mu) / sd) @ w + b)))


def score(studies: list[dict], keep: list[np.ndarray]) -> tuple[float, float]:
    """Patient Dice (mean) and the share of clean controls with the kept components."""
    dices, clean = [], []
    for s, k in zip(studies, keep, strict=True):
        predicted = s["size"][k].sum()
        if s["patient"]:
            total = predicted + s["true_px"]
            dices.append(1.0 if total == 0 else 2 * s["overlap"][k].sum() / total)
        else:
            clean.append(predicted == 0)
    return float(np.mean(dices)), float(np.mean(clean))


def frontier(points: list[tuple[float, float, str]]) -> dict[float, tuple[float, float, str]]:
    """The best Dice at each level of clean controls."""
    out = {}
    for level in LEVELS:
        at = [p for p in points if p[1] >= level]
        if at:
            out[level] = max(at, key=lambda p: p[0])
    return out


def sweep(
    studies: list[dict],
    scores: Sequence[np.ndarray | float],
    cuts: Iterable[float],
    min_sizes: Iterable[int],
    label: str,
) -> list[tuple[float, float, str]]:
    """(Dice, clean, setting) keeping the components scored >= each cut and of at least
    each minimum size; a score per component, or one per study (a gate)."""
    points = []
    for cut, min_px in itertools.product(cuts, min_sizes):
        keep = [
            (np.asarray(sc) >= cut) & (s["size"] >= max(min_px, 1))
            for sc, s in zip(scores, studies, strict=True)
        ]
        points.append((*score(studies, keep), f"{label} >= {cut:.3f}, min {min_px} px"))
    return points


def print_frontiers(columns: dict[str, list[tuple[float, float, str]]], n_studies: int) -> None:
    """The best Dice at each level of clean controls, a column per way, then the settings
    behind 80 and 85 %."""
    print(f"\nbest patient Dice at each level of clean controls ({n_studies} validation studies):")
    print("| clean controls >= | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    fr = {name: frontier(points) for name, points in columns.items()}
    for level in LEVELS:
        cells = [
            f"{f[level][0]:.3f} ({f[level][1]:.0%})" if level in f else "-" for f in fr.values()
        ]
        print(f"| {level:.0%} | " + " | ".join(cells) + " |")
    for name, f in fr.items():
        for level in (0.8, 0.85):
            if level in f:
                print(f"  {name} at >= {level:.0%}: {f[level][2]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--artifact", type=Path, default=None, help="default: the released one")
    args = parser.parse_args()

    predictor = Predictor.from_artifact(args.artifact)
    manifest = predictor.manifest
    t = manifest.threshold
    held_out = (int(manifest.training["seed"]), int(manifest.training["folds"]))
    train_files, val_files = split(
        find_studies(args.data), *held_out, int(manifest.training["fold"])
    )
    sets: dict[str, list[dict]] = {}
    for name, files in (("train", train_files), ("validation", val_files)):
        sets[name] = study_components(predictor, [load_study(f) for f in files], t)
        n_comp = sum(len(s["size"]) for s in sets[name])
        n_tumor = sum(int((s["overlap"] > 0).sum()) for s in sets[name])
        print(f"{name}: {len(files)} studies, {n_comp} components, {n_tumor} touch a tumor")
    val = sets["validation"]

    # The released rule's own knobs on the same masks.
    rule_points = []
    for min_px, min_peak in itertools.product(
        (0, 10, 25, 50, 100, 200), (0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    ):
        keep = [(s["size"] >= max(min_px, 1)) & (s["x"][:, 1] >= min_peak) for s in val]
        rule_points.append((*score(val, keep), f"min {min_px} px, peak >= {min_peak}"))
    released_px = int(manifest.postprocessing.get("min_component_px", 0))
    dice, clean = score(val, [s["size"] >= released_px for s in val])
    print(
        f"released rule (threshold {t:.2f}, min {released_px} px): "
        f"Dice {dice:.4f}, clean {clean:.1%}"
    )

    def xy(studies: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([s["x"] for s in studies if len(s["size"])])
        y = np.concatenate([(s["overlap"] > 0).astype(float) for s in studies if len(s["size"])])
        return x, y

    on_train = fit_logistic(*xy(sets["train"]))
    print("weights (trained on the training folds):")
    for feature, w in zip(FEATURES, on_train[2], strict=True):
        print(f"  {feature:>20}: {w:+.3f}")
    cuts = np.linspace(0.0, 0.95, 39)
    train_points = sweep(
        val,
        [predict_logistic(on_train, s["x"]) if len(s["size"]) else np.zeros(0) for s in val],
        cuts,
        (0, 10, 25),
        "filter from training folds: score",
    )

    rng = np.random.default_rng(0)
    order = rng.permutation(len(val))
    cross = [np.zeros(len(s["size"])) for s in val]
    for k in range(5):
        held = set(order[k::5].tolist())
        model = fit_logistic(*xy([s for i, s in enumerate(val) if i not in held]))
        for i in held:
            if len(val[i]["size"]):
                cross[i] = predict_logistic(model, val[i]["x"])
    cross_points = sweep(val, cross, cuts, (0, 10, 25), "filter cross-fitted in the fold: score")

    # A study-level gate on the same outputs: is there any tumor in this study at all?
    # (`study_features`; trained on the training folds, patients against controls).
    gate = fit_logistic(
        np.stack([study_features(s) for s in sets["train"]]),
        np.array([float(s["patient"]) for s in sets["train"]]),
    )
    gate_scores = predict_logistic(gate, np.stack([study_features(s) for s in val]))
    gate_points = sweep(val, list(gate_scores), cuts, (0, 10, 25, 50), "study gate")
    print_frontiers(
        {
            "released knobs (size, peak)": rule_points,
            "filter trained on training folds": train_points,
            "filter cross-fitted in the fold": cross_points,
            "study gate trained on training folds": gate_points,
        },
        len(val),
    )


if __name__ == "__main__":
    main()
