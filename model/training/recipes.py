"""Training recipes as named data: what `tumorseg train --recipe NAME` rebuilds.

The default, `released`, is the recipe of every member of the released ensemble; a recipe
that was measured and not adopted is not kept here but in `docs/experiments.md`, with
the commit that held it. `tumorseg train`'s flags override single fields of a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.training.sampling import CropConfig


@dataclass(frozen=True)
class Recipe:
    """Everything but the data, the fold and the seed that makes a training run.

    Attributes:
        architecture: A key of `model.network.ARCHITECTURES`.
        pretrained: "imagenet" starts the encoder from ImageNet; None from random weights.
        loss: "dice-bce" or "dice-focal" (`model/training/losses.py`).
        lambda_hard: Weight of the hard-negative pixel term of dice-bce (0: none).
        ema_decay: 0 ships the best validation checkpoint; else the final EMA weights.
        crop: How crops are drawn, pasted into and augmented.
    """

    architecture: str
    pretrained: str | None
    loss: str
    batch_size: int
    lr: float
    epochs: int
    steps_per_epoch: int
    ema_decay: float
    input_scale: float = 0.5
    weight_decay: float = 1e-4
    lambda_hard: float = 0.0
    crop: CropConfig = field(default_factory=CropConfig)


RECIPES: dict[str, Recipe] = {
    # The members of attention-unet-ens-20261206-05161575 (model/folds/eff-lite0-dicebce-20261203).
    "released": Recipe(
        architecture="efficient-attention-unet",
        pretrained="imagenet",
        loss="dice-bce",
        batch_size=16,
        lr=1e-3,
        epochs=5,
        steps_per_epoch=250,
        ema_decay=0.999,
    ),
}

DEFAULT_RECIPE = "released"
