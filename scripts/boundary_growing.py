"""Are the released model's misses lesion boundaries or whole lesions?

On the validation fold, the lowest-Dice patients have high precision and low recall. If
the network found their lesions but drew them too small, growing each predicted
component would recover the rest. Three ways, none of which adds a component (so clean
controls stay clean): dilation by k pixels; hysteresis (extend each component into
connected pixels above a lower probability); and PET-style region growing (extend each
component, within r pixels, into connected pixels whose uptake reaches a fraction f of
the component's peak, like an isocontour at f of SUVmax).

Usage::

    .venv/bin/python scripts/boundary_growing.py --data ../shared/data/dmiai2023
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage

from model.dataset import Study, find_studies, load_study, split
from model.metrics import dice
from model.postprocessing import CONNECTIVITY, remove_small_components
from model.predictor import Predictor


def patient_dice(studies: list[Study], masks: list[np.ndarray]) -> float:
    return float(
        np.mean([dice(m, s.label) for m, s in zip(masks, studies, strict=True) if s.is_patient])
    )


def keep_touching(candidates: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The connected regions of `candidates | mask` that contain a pixel of `mask`."""
    labels, _ = ndimage.label(candidates | mask, structure=CONNECTIVITY)
    kept = np.unique(labels[mask])
    return np.isin(labels, kept[kept > 0])


def grow_by_uptake(image: np.ndarray, mask: np.ndarray, f: float, r: int) -> np.ndarray:
    """Each component extended, within r pixels, into connected pixels of uptake >= f x its peak."""
    labels, _ = ndimage.label(mask, structure=CONNECTIVITY)
    out = mask.copy()
    for j, box in enumerate(ndimage.find_objects(labels), 1):
        ys = slice(max(box[0].start - r, 0), box[0].stop + r)
        xs = slice(max(box[1].start - r, 0), box[1].stop + r)
        comp, img = labels[ys, xs] == j, image[ys, xs]
        near = ndimage.binary_dilation(comp, iterations=r)
        out[ys, xs] |= keep_touching(near & (img >= f * img[comp].max()), comp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()

    predictor = Predictor.from_artifact()
    training = predictor.manifest.training
    held_out = (int(training["seed"]), int(training["folds"]), int(training["fold"]))
    studies = [load_study(f) for f in split(find_studies(args.data), *held_out)[1]]
    probs = predictor.probabilities([s.image for s in studies])
    t, min_px = predictor.threshold, predictor.min_component_px
    base = [remove_small_components(p > t, min_px) for p in probs]

    print("| post-processing | patient Dice |\n|---|---|")
    released = f"released (threshold {t}, components >= {min_px} px)"
    print(f"| {released} | {patient_dice(studies, base):.4f} |")
    cross = ndimage.generate_binary_structure(2, 1)
    for k in (1, 2, 3):
        grown = [ndimage.binary_dilation(b, cross, iterations=k) if b.any() else b for b in base]
        print(f"| dilated by {k} px | {patient_dice(studies, grown):.4f} |")
    for low in (0.05, 0.1, 0.2, 0.3):
        grown = [
            keep_touching(p > low, b) if b.any() else b for p, b in zip(probs, base, strict=True)
        ]
        print(f"| hysteresis down to {low} | {patient_dice(studies, grown):.4f} |")
    for f, r in itertools.product((0.3, 0.4, 0.5, 0.6, 0.7), (2, 4, 8)):
        grown = [
            grow_by_uptake(s.image, b, f, r) if b.any() else b
            for s, b in zip(studies, base, strict=True)
        ]
        label = f"uptake >= {f} x the component's peak, within {r} px"
        print(f"| {label} | {patient_dice(studies, grown):.4f} |")

    print("\nper patient, released masks (lowest Dice first); 'in lesions missed' is the share")
    print("of the expert pixels missed that lie in expert lesions no predicted pixel touches:")
    print("| patient | Dice | precision | recall | expert px | predicted px | in lesions missed |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    missed: list[tuple[float, int]] = []  # (peak probability, px) of each lesion missed whole
    for s, b, p in zip(studies, base, probs, strict=True):
        if not s.is_patient:
            continue
        truth = int(s.label.sum())
        hit = int((b & s.label).sum())
        lesions, n = ndimage.label(s.label, structure=CONNECTIVITY)
        found = np.unique(lesions[b & s.label])
        for j in sorted(set(range(1, n + 1)) - set(found.tolist())):
            missed.append((float(p[lesions == j].max()), int((lesions == j).sum())))
        in_missed = int((s.label & ~np.isin(lesions, found)).sum()) / max(truth - hit, 1)
        rows.append(
            (
                dice(b, s.label),
                hit / max(int(b.sum()), 1),
                hit / truth,
                truth,
                int(b.sum()),
                in_missed,
                s.name,
            )
        )
    for d, precision, recall, truth, predicted, in_missed, name in sorted(rows):
        print(
            f"| {name} | {d:.3f} | {precision:.2f} | {recall:.2f} | {truth} | {predicted} "
            f"| {in_missed:.0%} |"
        )
    weak = [r for r in rows if r[0] < 0.6]
    print(
        f"patients under Dice 0.6: {len(weak)}; of their missed expert pixels, "
        f"{np.mean([r[5] for r in weak]):.0%} on average lie in lesions missed whole"
    )
    peaks, px = np.array([m[0] for m in missed]), np.array([m[1] for m in missed])
    print(
        f"expert lesions missed whole: {len(missed)} (median {np.median(px):.0f} px); "
        f"their peak probability: median {np.median(peaks):.3f}"
    )
    for level in (0.05, 0.1, 0.2):
        print(
            f"  peak > {level}: {np.mean(peaks > level):.0%} of them, "
            f"{px[peaks > level].sum() / px.sum():.0%} of their pixels"
        )


if __name__ == "__main__":
    main()
