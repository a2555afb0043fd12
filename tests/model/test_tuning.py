"""The post-processing choice: Dice first, then cost, then clean controls."""

from __future__ import annotations

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
