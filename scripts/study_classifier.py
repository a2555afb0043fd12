"""Can a second network, looking at the whole image, tell a tumor-free study from a patient's?

A small CNN (four strided conv blocks, global max and mean pooling, one logit) sees each
whole preprocessed image at the segmentation network's scale (half resolution), so it
has the whole-body context the crop-trained segmentation network lacks. It is trained
from scratch on the training folds of the released model (patients against controls,
flips, small intensity and shift changes, bf16 on a CPU with native bf16), then gates
the released model's masks on the validation fold: a study it calls tumor-free gets an
empty mask. Also tried: the gate stacked with the study gate on the segmentation
network's own outputs (`component_filter.py`).

Usage::

    .venv/bin/python scripts/study_classifier.py --data ../shared/data/dmiai2023
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from component_filter import (
    fit_logistic,
    predict_logistic,
    print_frontiers,
    study_components,
    study_features,
    sweep,
)
from torch import nn

from model.dataset import find_studies, load_study, split
from model.predictor import Predictor, bf16_supported
from model.preprocessing import resample


class StudyNet(nn.Module):
    """Whole image in, one tumor-present logit out."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in widths:
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(2 * c_in, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], 1)
        return self.head(pooled)[:, 0]


def to_batch(images: list[np.ndarray], scale: float, height: int, width: int) -> torch.Tensor:
    """Images at the network's scale, zero-padded (top-left aligned) to one size."""
    out = torch.zeros(len(images), 1, height, width)
    for j, img in enumerate(images):
        small = resample(img, scale)[:height, :width]
        out[j, 0, : small.shape[0], : small.shape[1]] = torch.from_numpy(small)
    return out


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Left-right flip, intensity scale 0.8-1.2, shift up to 16 px: per image."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen))
    dy, dx = (int(v) for v in torch.randint(-16, 17, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train(
    x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, bf16: bool
) -> tuple[StudyNet, list[float]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = StudyNet().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    steps_per_epoch = (len(x) + 15) // 16
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * steps_per_epoch)
    pos_weight = (y == 0).sum() / (y == 1).sum().clamp(min=1)
    losses = []
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * 16 : (k + 1) * 16]
            xb = augment(x[idx], gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(xb).float()
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, y[idx], pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return net, losses


@torch.inference_mode()
def predict(net: StudyNet, x: torch.Tensor, bf16: bool) -> np.ndarray:
    """Tumor-present probabilities, averaged over the image and its mirror."""
    net.eval()
    out = []
    for k in range(0, len(x), 16):
        xb = x[k : k + 16].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            p = (torch.sigmoid(net(xb).float()) + torch.sigmoid(net(xb.flip(-1)).float())) / 2
        out.append(p)
    return torch.cat(out).numpy()


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the chance that a patient outscores a control)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    predictor = Predictor.from_artifact()
    manifest = predictor.manifest
    scale = float(manifest.preprocessing.get("input_scale", 1.0))
    held_out = (int(manifest.training["seed"]), int(manifest.training["folds"]))
    train_files, val_files = split(
        find_studies(args.data), *held_out, int(manifest.training["fold"])
    )
    train_studies = [load_study(f) for f in train_files]
    val_studies = [load_study(f) for f in val_files]
    height = max(round(s.image.shape[0] * scale) for s in train_studies + val_studies)
    width = max(round(s.image.shape[1] * scale) for s in train_studies + val_studies)
    height, width = (height + 31) // 32 * 32, (width + 31) // 32 * 32
    x_train = to_batch([s.image for s in train_studies], scale, height, width)
    y_train = torch.tensor([float(s.is_patient) for s in train_studies])
    x_val = to_batch([s.image for s in val_studies], scale, height, width)
    y_val = np.array([float(s.is_patient) for s in val_studies])
    bf16 = bf16_supported(torch.device("cpu"))

    began = time.perf_counter()
    net, losses = train(x_train, y_train, args.epochs, args.seed, bf16)
    print(
        f"trained on {len(train_studies)} studies ({int(y_train.sum())} patients) at "
        f"{height}x{width}, {args.epochs} epochs in {time.perf_counter() - began:.0f} s; "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    p_train = predict(net, x_train, bf16)
    p_val = predict(net, x_val, bf16)
    print(
        f"AUC patients against controls: training folds {auc(p_train, y_train.numpy()):.3f}, "
        f"validation fold {auc(p_val, y_val):.3f}"
    )

    # The released masks and the output-based study gate, as in component_filter.py.
    t = manifest.threshold
    rows = {
        "train": study_components(predictor, train_studies, t),
        "validation": study_components(predictor, val_studies, t),
    }
    val = rows["validation"]

    def study_x(s: dict, image_p: float) -> np.ndarray:
        logit = np.log(image_p + 1e-6) - np.log(1 - image_p + 1e-6)
        return np.append(study_features(s), logit)

    # Stacked gate: fitted on the training folds, where both inputs are optimistic.
    stacked = fit_logistic(
        np.stack([study_x(s, p) for s, p in zip(rows["train"], p_train, strict=True)]),
        y_train.numpy(),
    )
    p_stacked = predict_logistic(
        stacked, np.stack([study_x(s, p) for s, p in zip(val, p_val, strict=True)])
    )
    print(f"AUC of the stacked gate on the validation fold: {auc(p_stacked, y_val):.3f}")

    def gate_sweep(gate: np.ndarray, label: str) -> list[tuple[float, float, str]]:
        cuts = np.unique(np.concatenate([[0.0], np.quantile(gate, np.linspace(0, 1, 41))]))
        return sweep(val, list(gate), cuts, (0, 10, 25, 50), label)

    print_frontiers(
        {
            "released masks, min size only": gate_sweep(np.ones(len(val)), "no gate"),
            "image classifier gate": gate_sweep(p_val, "image gate"),
            "stacked gate": gate_sweep(p_stacked, "stacked"),
        },
        len(val),
    )


if __name__ == "__main__":
    main()
