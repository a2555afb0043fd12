"""The training loop: crops or whole studies in, a versioned artifact out.

Deterministic for a given seed (single-process sampling, seeded torch), resumable from a
checkpoint, validated on whole images with the competition Dice, and ends by tuning the
post-processing on the validation split and writing its out-of-fold maps.

Two recipes share the loop. The released one: 192-px crops, MONAI's AttentionUnet,
DiceFocal, the best validation checkpoint. The whole-image one (`--recipe whole`):
height-bucketed whole studies, the deep-supervised `DeepAttentionUnet`, per-image Dice
plus BCE, probabilistic augmentation, and the final EMA weights.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.artifact import load_artifact, save_artifact
from model.dataset import Study, StudyFile, find_studies, fingerprint, load_study, split
from model.efficientnet_unet import EfficientAttentionUnet, load_imagenet_encoder
from model.manifest import Manifest
from model.network import DEFAULT_ARCHITECTURE, build_network, stride_multiple
from model.predictor import resolve_device, resolve_precision
from model.training import validation
from model.training.ema import EMA
from model.training.losses import make_loss
from model.training.sampling import CropConfig, CropSampler, parallel_batches
from model.training.whole_images import WholeImageConfig, WholeImageSampler

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run (recorded in the manifest)."""

    data: Path
    out: Path
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    lambda_dice: float = 1.0
    lambda_focal: float = 10.0
    time_budget_s: float | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    #: the seed of the fold split; None: `seed`. A second seed of one fold sets this to
    #: the first one's seed, so that both hold out the same patients.
    split_seed: int | None = None
    folds: int = 5
    fold: int = 0
    val_controls_during_training: int = 40
    limit: int | None = None
    resume: bool = False
    workers: int = 0
    input_scale: float = 0.5
    init_from: Path | None = None
    crop: CropConfig = field(default_factory=CropConfig)
    #: "crops" (CropSampler) or "whole" (WholeImageSampler with `whole`).
    sampler: str = "crops"
    whole: WholeImageConfig = field(default_factory=WholeImageConfig)
    #: "dice-focal" or "dice-bce" (model/training/losses.py).
    loss: str = "dice-focal"
    #: 0: ship the best validation checkpoint; else ship the final EMA at this decay.
    ema_decay: float = 0.0
    architecture: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    #: None: random initial weights; "imagenet": the encoder starts from ImageNet
    #: (EfficientAttentionUnet only).
    pretrained: str | None = None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def lr_factor(step: int, total: int, warmup: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak.

    Progress is the larger of steps done / `total` and `time_progress` (elapsed / time
    budget), so a run cut short by its time budget still ends annealed. Without a time
    budget the schedule depends on the step alone, and the run is deterministic.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _load(files: list[StudyFile], limit: int | None) -> list[Study]:
    if limit is not None:
        pats = [f for f in files if f.is_patient][:limit]
        ctrls = [f for f in files if not f.is_patient][: max(1, limit // 2)]
        files = pats + ctrls
    return [load_study(f) for f in files]


def train(cfg: TrainConfig) -> Path:
    """Run a training and write a new artifact directory under `cfg.out`.

    Returns:
        The artifact directory.
    """
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        # the CPUs this process may run on (`taskset` pins one training per core)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
    files = find_studies(cfg.data)
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    train_files, val_files = split(files, split_seed, cfg.folds, cfg.fold)
    log.info("data: %d train / %d validation studies", len(train_files), len(val_files))
    train_set = _load(train_files, cfg.limit)
    val_set = _load(val_files, cfg.limit)
    val_patients = [s for s in val_set if s.is_patient]
    val_quick = (
        val_patients + [s for s in val_set if not s.is_patient][: cfg.val_controls_during_training]
    )

    net, init_version = _initial_network(cfg)
    net = net.to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg.loss, cfg.lambda_dice, cfg.lambda_focal)
    ema = EMA(net, cfg.ema_decay) if cfg.ema_decay else None
    sampler: CropSampler | WholeImageSampler
    if cfg.sampler == "whole":
        sampler = WholeImageSampler(
            train_set,
            cfg.whole,
            cfg.seed,
            cfg.input_scale,
            stride_multiple(cfg.architecture),
            device,
        )
    elif cfg.sampler == "crops":
        sampler = CropSampler(train_set, cfg.crop, cfg.seed, cfg.input_scale)
    else:
        raise ValueError(f"unknown sampler {cfg.sampler!r}: crops or whole")
    run_dir = Path(cfg.out) / "runs" / f"seed{cfg.seed}-fold{cfg.fold}of{cfg.folds}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    step, best_dice, best_state, history = 0, -1.0, None, []
    elapsed_before = 0.0
    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        sampler.restore(ck["sampler"])
        torch.set_rng_state(ck["torch_rng"])
        step, best_dice, best_state = ck["step"], ck["best_dice"], ck["best_state"]
        history, elapsed_before = ck["history"], ck["elapsed"]
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    if cfg.workers > 0 and not isinstance(sampler, CropSampler):
        raise ValueError("--workers applies to crops; whole images are batched on the device")
    batches = (
        parallel_batches(
            sampler, cfg.batch_size, cfg.workers, cfg.seed, step, pin_memory=device.type == "cuda"
        )
        if cfg.workers > 0 and isinstance(sampler, CropSampler)
        else None
    )
    net.train()
    bar = tqdm(total=cfg.total_steps, initial=step, desc="train", unit="step")
    out_of_time = False
    while step < cfg.total_steps and not out_of_time:
        elapsed = elapsed_before + time.monotonic() - started
        time_progress = elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.total_steps, cfg.warmup_steps, time_progress)
        x, y = next(batches) if batches is not None else sampler.batch(cfg.batch_size)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = net(x)
        loss = loss_fn(outputs, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(net, step)
        step += 1
        bar.update(1)
        if step % 25 == 0:  # reading the loss waits for the device
            bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{best_dice:.3f}")
        elapsed = elapsed_before + time.monotonic() - started
        out_of_time = cfg.time_budget_s is not None and elapsed > cfg.time_budget_s
        if step % cfg.steps_per_epoch == 0 or step == cfg.total_steps or out_of_time:
            scored = ema.network if ema is not None else net
            probs = validation.probabilities(
                scored, device, dtype, val_quick, cfg.input_scale, cfg.architecture
            )
            quick = validation.quick_score(val_quick, probs)
            vd = quick["val_dice"]
            history.append(
                {
                    "step": step,
                    "loss": float(loss.item()),
                    **quick,
                    "elapsed_s": round(elapsed, 1),
                }
            )
            log.info("step %d: val dice %.4f at threshold %.2f", step, vd, quick["threshold"])
            tqdm.write(
                f"step {step}: val dice {vd:.4f} (t={quick['threshold']}) "
                f"clean controls {quick['controls_clean']}"
            )
            if ema is None and vd > best_dice:
                best_dice, best_state = vd, copy.deepcopy(net.state_dict())
            torch.save(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "sampler": sampler.state(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    "best_dice": best_dice,
                    "best_state": best_state,
                    "history": history,
                    "elapsed": elapsed,
                    "ema": ema.state_dict() if ema is not None else None,
                },
                ckpt_path,
            )
    bar.close()
    if ema is not None:
        net = ema.network
    elif best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    train_seconds = elapsed_before + time.monotonic() - started
    plain, tta = validation.held_out_maps(
        net, device, dtype, val_set, cfg.input_scale, cfg.architecture
    )
    post, effects = validation.tune(val_set, plain, tta)
    manifest = Manifest(
        version="pending",
        trained=True,
        architecture=dict(cfg.architecture),
        threshold=post.threshold,
        postprocessing={"min_component_px": post.min_component_px, "flip_tta": post.flip_tta},
        training={
            "data_fingerprint": fingerprint(files),
            "n_train": len(train_set),
            "n_validation": len(val_set),
            "seed": cfg.seed,
            "split_seed": split_seed,
            "folds": cfg.folds,
            "fold": cfg.fold,
            "steps": step,
            "epochs": step / cfg.steps_per_epoch,
            "seconds": round(train_seconds, 1),
            "device": str(device),
            "precision": str(dtype or "fp32"),
            "torch": torch.__version__,
            "config": _jsonable(asdict(cfg)),
            "history": history,
            "stopped_by_time_budget": out_of_time,
            "weights": f"final EMA (decay {cfg.ema_decay})" if ema else "best validation",
            "initialized_from": init_version,
        },
        metrics=effects,
    )
    manifest.preprocessing["input_scale"] = cfg.input_scale
    target = save_artifact(net, manifest, Path(cfg.out))
    validation.save_oof(target / validation.OOF_NAME, val_set, plain, tta)
    log.info("wrote artifact %s", target)
    return target


def _initial_network(cfg: TrainConfig) -> tuple[torch.nn.Module, str | None]:
    """A fresh network, or with `cfg.init_from` an artifact's weights to fine-tune (at
    another input scale or on other data); its architecture must be the run's."""
    if cfg.init_from is None:
        net = build_network(cfg.architecture)
        if cfg.pretrained is None:
            return net, None
        if cfg.pretrained != "imagenet" or not isinstance(net, EfficientAttentionUnet):
            raise ValueError(
                f"--pretrained {cfg.pretrained}: only imagenet, for efficient-attention-unet"
            )
        source = load_imagenet_encoder(net)
        return net, f"imagenet:{source.name}"
    manifest, net = load_artifact(cfg.init_from)
    if dict(manifest.architecture) != dict(cfg.architecture):
        raise ValueError(
            f"{cfg.init_from} has architecture {manifest.architecture}, "
            f"not this run's {cfg.architecture}"
        )
    net.train()
    return net, manifest.version


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
