"""Whole-image validation during training, and the post-processing tuned at its end.

Also writes the run's out-of-fold maps (`oof.npz` in the artifact): the validation fold's
probabilities, without and with flip TTA, as uint8 (probability x 255), so that an
ensemble's threshold, minimum component size and peak rule can later be chosen on the
pooled out-of-fold maps of all folds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.dataset import Study
from model.network import stride_multiple
from model.postprocessing import Rule
from model.predictor import Inference, Predictor
from model.training import tuning

OOF_NAME = "oof.npz"


def probabilities(
    net: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype | None,
    studies: Sequence[Study],
    input_scale: float,
    architecture: Mapping[str, Any],
    flip_tta: bool = False,
) -> list[np.ndarray]:
    """Full-size probability maps of `studies` through the inference path (the network is
    left in the mode it was in)."""
    inference = Inference(device, stride_multiple(architecture), input_scale, flip_tta, 4, dtype)
    was_training = net.training
    pred = Predictor([net], inference, Rule(0.5), version="validation")
    probs = pred.probabilities([s.image for s in studies])
    net.train(was_training)
    return probs


def held_out_maps(
    net: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype | None,
    studies: Sequence[Study],
    input_scale: float,
    architecture: Mapping[str, Any],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The maps that post-processing is chosen on and `save_oof` keeps: without and with
    flip TTA."""
    plain = probabilities(net, device, dtype, studies, input_scale, architecture, False)
    tta = probabilities(net, device, dtype, studies, input_scale, architecture, True)
    return plain, tta


def quick_score(studies: Sequence[Study], probs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Patient Dice at the best threshold (no component removal): the training curve."""
    best_t = max(tuning.THRESHOLDS, key=lambda t: tuning.score(studies, probs, t, 0)["dice"] or 0.0)
    summary = tuning.score(studies, probs, best_t, 0)
    return {
        "val_dice": float(summary["dice"] or 0.0),
        "threshold": best_t,
        "controls_clean": summary["controls_clean_fraction"],
    }


def tune(
    val: Sequence[Study], plain: Sequence[np.ndarray], tta: Sequence[np.ndarray]
) -> tuple[tuning.Setting, dict[str, Any]]:
    """Pick threshold / min component / TTA on validation and record each one's effect."""
    settings = tuning.grid(val, plain, False) + tuning.grid(val, tta, True)
    chosen = tuning.choose(settings)
    probs = tta if chosen.flip_tta else plain
    summary = tuning.score(val, probs, chosen.threshold, chosen.min_component_px)

    def at(t: float, m: int, f: bool) -> dict[str, Any]:
        r = tuning.score(val, tta if f else plain, t, m)
        return {"threshold": t, "min_component_px": m, "flip_tta": f, **r}

    best_plain = max(tuning.THRESHOLDS, key=lambda t: tuning.score(val, plain, t, 0)["dice"] or 0)
    effects = {
        "validation": summary,
        "chosen": asdict(chosen),
        "effects": [
            {"step": "threshold 0.5, no post-processing", **at(0.5, 0, False)},
            {"step": "tuned threshold", **at(best_plain, 0, False)},
            {
                "step": "tuned threshold + min component",
                **at(chosen.threshold, chosen.min_component_px, False),
            },
            {
                "step": "chosen (with flip TTA if it helps)",
                **at(chosen.threshold, chosen.min_component_px, chosen.flip_tta),
            },
        ],
        "crossfit_dice": tuning.crossfit(val, plain, tta),
    }
    return chosen, effects


def save_oof(
    path: Path, studies: Sequence[Study], plain: Sequence[np.ndarray], tta: Sequence[np.ndarray]
) -> None:
    """Write the out-of-fold maps: keys `plain/<study>` and `tta/<study>`, uint8."""

    def u8(p: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)

    arrays = {f"plain/{s.name}": u8(p) for s, p in zip(studies, plain, strict=True)}
    arrays |= {f"tta/{s.name}": u8(p) for s, p in zip(studies, tta, strict=True)}
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_oof(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The maps `save_oof` wrote, as float32 in [0, 1]: {"plain": {study: map}, "tta": ...}."""
    out: dict[str, dict[str, np.ndarray]] = {"plain": {}, "tta": {}}
    with np.load(path) as z:
        for key in z.files:
            kind, name = key.split("/", 1)
            out[kind][name] = z[key].astype(np.float32) / 255.0
    return out
