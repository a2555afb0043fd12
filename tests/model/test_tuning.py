"""The post-processing choice: Dice first, then cost, then clean controls."""

from __future__ import annotations

import pytest

from model.training.tuning import Setting, choose


def test_best_dice_wins_beyond_the_tolerance() -> None:
    chosen = choose(
        [
            Setting(0.5, 0, False, dice=0.60, controls_clean_fraction=0.9),
            Setting(0.4, 25, True, dice=0.70, controls_clean_fraction=0.3),
        ]
    )
    assert (chosen.dice, chosen.flip_tta) == (0.70, True)


def test_tta_is_dropped_when_it_buys_less_than_the_tolerance() -> None:
    chosen = choose(
        [
            Setting(0.4, 25, True, dice=0.690, controls_clean_fraction=0.62),
            Setting(0.4, 25, False, dice=0.684, controls_clean_fraction=0.60),
        ]
    )
    assert chosen.flip_tta is False


def test_among_equally_cheap_settings_the_cleanest_controls_win() -> None:
    chosen = choose(
        [
            Setting(0.3, 0, False, dice=0.690, controls_clean_fraction=0.40),
            Setting(0.5, 50, False, dice=0.685, controls_clean_fraction=0.70),
            Setting(0.6, 100, False, dice=0.670, controls_clean_fraction=0.95),
        ]
    )
    assert (chosen.threshold, chosen.min_component_px) == (0.5, 50)


def test_crossfit_scores_each_half_with_the_other_halfs_choice() -> None:
    import numpy as np

    from model.dataset import Study
    from model.training.tuning import crossfit

    rng = np.random.default_rng(0)
    studies, perfect, blank = [], [], []
    for k in range(6):
        label = np.zeros((32, 32), dtype=bool)
        label[4 + k : 12 + k, 8:20] = True
        studies.append(Study(f"p{k}", rng.random((32, 32)).astype(np.float32), label, True))
        perfect.append(label.astype(np.float32))
        blank.append(np.zeros((32, 32), dtype=np.float32))
    assert crossfit(studies, perfect, perfect) == 1.0
    assert crossfit(studies, blank, blank) == 0.0
    # Even studies: tumor at 0.9 and a false block at 0.3 (any threshold in (0.3, 0.9]
    # is perfect); odd studies: tumor at 0.4 only (any threshold <= 0.4 is perfect). Tuned
    # on the even half, the choice (0.35) is perfect on the odd half; tuned on the odd
    # half, the choice (0.05) keeps the even half's false block: Dice 2*96 / (96+96+64).
    maps = []
    for k, label in enumerate(perfect):
        m = label * (0.9 if k % 2 == 0 else 0.4)
        if k % 2 == 0:
            m[20:28, 22:30] = 0.3
        maps.append(m)
    assert crossfit(studies, maps, maps) == pytest.approx((1.0 + 0.75) / 2)
