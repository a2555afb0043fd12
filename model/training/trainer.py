"""The training loop: crops in, a versioned artifact out.

Deterministic for a given seed (single-process sampling, seeded torch), resumable from a
checkpoint, validated on whole images with the competition Dice, and ends by tuning the
post-processing on the validation split and writing its out-of-fold maps. The recipe
(network, loss, crops, schedule) is data: `model/training/recipes.py`.

`train` reads as its steps: load the split, build the run, resume it, fit it, and write
the artifact.
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
from model.network import DEFAULT_ARCHITECTURE, build_network
from model.predictor import resolve_device, resolve_precision
from model.training import validation
from model.training.ema import EMA
from model.training.losses import make_loss
from model.training.sampling import CropConfig, CropSampler, parallel_batches

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
    #: Weight of dice-bce's term on the hardest pixels of negative crops (0: none).
    lambda_hard: float = 0.0
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
    #: "dice-focal" or "dice-bce" (model/training/losses.py).
    loss: str = "dice-focal"
    #: 0: ship the best validation checkpoint; else ship the final EMA at this decay.
    ema_decay: float = 0.0
    architecture: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    #: None: random initial weights; "imagenet": the encoder starts from ImageNet
    #: (EfficientAttentionUnet only).
    pretrained: str | None = None
    #: The recipe the run was built from (`recipes.py`), with any fields overridden.
    recipe: str | None = None

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


@dataclass
class _Split:
    """The studies of one run: all files, the training and validation sets."""

    files: list[StudyFile]
    split_seed: int
    train: list[Study]
    val: list[Study]

    def val_quick(self, controls: int) -> list[Study]:
        """The validation checks' subset: every patient and the first `controls` controls."""
        ctrls = [s for s in self.val if not s.is_patient][:controls]
        return [s for s in self.val if s.is_patient] + ctrls


@dataclass
class _Run:
    """A run's moving parts and its progress (what a checkpoint holds)."""

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    ema: EMA | None
    sampler: CropSampler
    init_version: str | None
    step: int = 0
    best_dice: float = -1.0
    best_state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0
    out_of_time: bool = False

    @property
    def shipped(self) -> torch.nn.Module:
        """The network that is scored and shipped: the EMA's when there is one."""
        return self.ema.network if self.ema is not None else self.net


def _load(files: list[StudyFile], limit: int | None) -> list[Study]:
    if limit is not None:
        pats = [f for f in files if f.is_patient][:limit]
        ctrls = [f for f in files if not f.is_patient][: max(1, limit // 2)]
        files = pats + ctrls
    return [load_study(f) for f in files]


def _load_split(cfg: TrainConfig) -> _Split:
    files = find_studies(cfg.data)
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    train_files, val_files = split(files, split_seed, cfg.folds, cfg.fold)
    log.info("data: %d train / %d validation studies", len(train_files), len(val_files))
    return _Split(files, split_seed, _load(train_files, cfg.limit), _load(val_files, cfg.limit))


def _build_run(cfg: TrainConfig, train_set: list[Study], device: torch.device) -> _Run:
    net, init_version = _initial_network(cfg)
    net = net.to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return _Run(
        net=net,
        opt=torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
        loss_fn=make_loss(cfg.loss, cfg.lambda_dice, cfg.lambda_focal, cfg.lambda_hard),
        ema=EMA(net, cfg.ema_decay) if cfg.ema_decay else None,
        sampler=CropSampler(train_set, cfg.crop, cfg.seed, cfg.input_scale),
        init_version=init_version,
    )


def _checkpoint_path(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out) / "runs" / f"seed{cfg.seed}-fold{cfg.fold}of{cfg.folds}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "checkpoint.pt"


def _save_checkpoint(run: _Run, path: Path, elapsed: float) -> None:
    torch.save(
        {
            "net": run.net.state_dict(),
            "opt": run.opt.state_dict(),
            "sampler": run.sampler.state(),
            "torch_rng": torch.get_rng_state(),
            "step": run.step,
            "best_dice": run.best_dice,
            "best_state": run.best_state,
            "history": run.history,
            "elapsed": elapsed,
            "ema": run.ema.state_dict() if run.ema is not None else None,
        },
        path,
    )


def _resume(run: _Run, path: Path) -> None:
    ck = torch.load(path, weights_only=False)
    run.net.load_state_dict(ck["net"])
    run.opt.load_state_dict(ck["opt"])
    run.sampler.restore(ck["sampler"])
    torch.set_rng_state(ck["torch_rng"])
    run.step, run.best_dice, run.best_state = ck["step"], ck["best_dice"], ck["best_state"]
    run.history, run.elapsed_before = ck["history"], ck["elapsed"]
    if run.ema is not None:
        run.ema.load_state_dict(ck["ema"])
    log.info("resumed from %s at step %d", path, run.step)


def _validate(
    cfg: TrainConfig,
    run: _Run,
    val_quick: list[Study],
    device: torch.device,
    dtype: torch.dtype | None,
    loss: float,
    elapsed: float,
) -> None:
    """Score the shipped network on the quick validation set; keep the best weights."""
    probs = validation.probabilities(
        run.shipped, device, dtype, val_quick, cfg.input_scale, cfg.architecture
    )
    quick = validation.quick_score(val_quick, probs)
    vd = quick["val_dice"]
    run.history.append({"step": run.step, "loss": loss, **quick, "elapsed_s": round(elapsed, 1)})
    log.info("step %d: val dice %.4f at threshold %.2f", run.step, vd, quick["threshold"])
    tqdm.write(
        f"step {run.step}: val dice {vd:.4f} (t={quick['threshold']}) "
        f"clean controls {quick['controls_clean']}"
    )
    if run.ema is None and vd > run.best_dice:
        run.best_dice, run.best_state = vd, copy.deepcopy(run.net.state_dict())


def _fit(
    cfg: TrainConfig,
    run: _Run,
    val_quick: list[Study],
    device: torch.device,
    dtype: torch.dtype | None,
    ckpt_path: Path,
) -> None:
    """Step until the schedule or the time budget ends, validating and checkpointing at
    each epoch's end."""
    started = time.monotonic()
    batches = (
        parallel_batches(
            run.sampler,
            cfg.batch_size,
            cfg.workers,
            cfg.seed,
            run.step,
            pin_memory=device.type == "cuda",
        )
        if cfg.workers > 0
        else None
    )
    run.net.train()
    bar = tqdm(total=cfg.total_steps, initial=run.step, desc="train", unit="step")
    while run.step < cfg.total_steps and not run.out_of_time:
        elapsed = run.elapsed_before + time.monotonic() - started
        time_progress = elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0
        for group in run.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(
                run.step, cfg.total_steps, cfg.warmup_steps, time_progress
            )
        x, y = next(batches) if batches is not None else run.sampler.batch(cfg.batch_size)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = run.net(x)
        loss = run.loss_fn(outputs, y)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        if run.ema is not None:
            run.ema.update(run.net, run.step)
        run.step += 1
        bar.update(1)
        if run.step % 25 == 0:  # reading the loss waits for the device
            bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{run.best_dice:.3f}")
        elapsed = run.elapsed_before + time.monotonic() - started
        run.out_of_time = cfg.time_budget_s is not None and elapsed > cfg.time_budget_s
        if run.step % cfg.steps_per_epoch == 0 or run.step == cfg.total_steps or run.out_of_time:
            _validate(cfg, run, val_quick, device, dtype, float(loss.item()), elapsed)
            _save_checkpoint(run, ckpt_path, elapsed)
    bar.close()
    run.elapsed_before += time.monotonic() - started


def _write_artifact(
    cfg: TrainConfig,
    run: _Run,
    data: _Split,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Path:
    """Tune post-processing on the held-out fold, write the artifact and its OOF maps."""
    if run.ema is not None:
        net = run.ema.network
    else:
        net = run.net
        if run.best_state is not None:
            net.load_state_dict(run.best_state)
    net.eval()
    plain, tta = validation.held_out_maps(
        net, device, dtype, data.val, cfg.input_scale, cfg.architecture
    )
    post, effects = validation.tune(data.val, plain, tta)
    manifest = Manifest(
        version="pending",
        trained=True,
        architecture=dict(cfg.architecture),
        threshold=post.threshold,
        postprocessing={"min_component_px": post.min_component_px, "flip_tta": post.flip_tta},
        training={
            "data_fingerprint": fingerprint(data.files),
            "n_train": len(data.train),
            "n_validation": len(data.val),
            "recipe": cfg.recipe,
            "seed": cfg.seed,
            "split_seed": data.split_seed,
            "folds": cfg.folds,
            "fold": cfg.fold,
            "steps": run.step,
            "epochs": run.step / cfg.steps_per_epoch,
            "seconds": round(run.elapsed_before, 1),
            "device": str(device),
            "precision": str(dtype or "fp32"),
            "torch": torch.__version__,
            "config": _jsonable(asdict(cfg)),
            "history": run.history,
            "stopped_by_time_budget": run.out_of_time,
            "weights": f"final EMA (decay {cfg.ema_decay})" if run.ema else "best validation",
            "initialized_from": run.init_version,
        },
        metrics=effects,
    )
    manifest.preprocessing["input_scale"] = cfg.input_scale
    target = save_artifact(net, manifest, Path(cfg.out))
    validation.save_oof(target / validation.OOF_NAME, data.val, plain, tta)
    log.info("wrote artifact %s", target)
    return target


def train(cfg: TrainConfig) -> Path:
    """Run a training and write a new artifact directory under `cfg.out`.

    Returns:
        The artifact directory.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    if device.type == "cpu":
        # the CPUs this process may run on (`taskset` pins one training per core)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels
    data = _load_split(cfg)
    run = _build_run(cfg, data.train, device)
    ckpt_path = _checkpoint_path(cfg)
    if cfg.resume and ckpt_path.is_file():
        _resume(run, ckpt_path)
    _fit(cfg, run, data.val_quick(cfg.val_controls_during_training), device, dtype, ckpt_path)
    return _write_artifact(cfg, run, data, device, dtype)


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
