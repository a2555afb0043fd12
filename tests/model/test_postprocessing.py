import numpy as np
from scipy import ndimage

from model.postprocessing import (
    CONNECTIVITY,
    component_sizes,
    remove_small_components,
    to_mask,
)


def test_small_components_are_removed_and_large_kept() -> None:
    mask = np.zeros((20, 20), bool)
    mask[0, 0] = True
    mask[5:10, 5:10] = True
    out = remove_small_components(mask, 10)
    assert not out[0, 0]
    assert out[5:10, 5:10].all()
    assert to_mask(np.where(mask, 0.9, 0.1), 0.5, 0).sum() == 26


def test_component_work_inside_the_tumor_box_matches_whole_image_labelling() -> None:
    """Labelling only the bounding box of the tumor pixels must change nothing: same
    components kept, same sizes, for blobs that touch the box's and the image's edges
    and for lesions joined only at a corner."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = ndimage.binary_dilation(
            rng.random((60, 45)) > 0.985, iterations=int(rng.integers(0, 3))
        )
        mask[rng.integers(0, 60), rng.integers(0, 45)] = bool(rng.integers(0, 2))
        labels, n = ndimage.label(mask, structure=CONNECTIVITY)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        for min_px in (0, 2, 5, 25):
            keep = np.concatenate([[False], sizes >= min_px]) if min_px > 1 else None
            expected = keep[labels] if keep is not None else mask
            assert np.array_equal(remove_small_components(mask, min_px), expected)
        assert np.array_equal(np.sort(component_sizes(mask)), np.sort(sizes))
    diagonal = np.zeros((4, 4), bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    assert component_sizes(diagonal).tolist() == [2]
    assert component_sizes(np.zeros((4, 4), bool)).size == 0
    assert not remove_small_components(np.zeros((4, 4), bool), 5).any()


def test_the_peak_rule_keeps_only_components_that_reach_the_peak() -> None:
    from model.postprocessing import Rule, components, levels

    prob = np.zeros((12, 12))
    prob[1:4, 1:4] = 0.6  # above the threshold, never reaches the peak: removed
    prob[6:10, 6:10] = 0.6
    prob[7, 7] = 0.95  # one pixel at the peak keeps its whole component
    mask = to_mask(prob, 0.5, 0, min_peak=0.9)
    assert mask[6:10, 6:10].all()
    assert not mask[1:4, 1:4].any()
    assert mask.sum() == 16
    # a peak at or below the threshold is no rule
    assert to_mask(prob, 0.5, 0, min_peak=0.5).sum() == 25
    # with a size floor too: the seeded component must also be large enough
    rule = Rule(0.5, 17, 0.9)
    assert not components(levels(prob, rule), rule).mask().any()
    assert components(levels(prob, Rule(0.5, 16, 0.9)), rule).mask().sum() == 0
    assert components(levels(prob, rule), Rule(0.5, 16, 0.9)).mask().sum() == 16
    assert not components(np.zeros((3, 3), np.uint8), rule).mask().any()


def test_components_are_labelled_once_and_say_what_the_rule_keeps() -> None:
    from model.postprocessing import Rule, components

    levels = np.zeros((10, 10), np.uint8)
    levels[1:3, 1:3] = 1  # 4 px, no peak
    levels[5:9, 5:9] = 1  # 16 px with one pixel at the peak
    levels[6, 6] = 2
    found = components(levels, Rule(0.5, 2, 0.9))
    assert found.box == (slice(1, 9), slice(1, 9))
    assert sorted(found.sizes[1:].tolist()) == [4, 16]
    assert found.kept.tolist() == [int(found.labels[5, 5])]
    assert found.mask().sum() == 16
    # without a peak rule a manifest's min_peak of 0 is no rule at all
    assert Rule.of(0.4, {"min_component_px": 3, "min_peak": 0.0}) == Rule(0.4, 3, None)
    assert Rule(0.5, 0, 0.5).min_peak is None


def test_the_two_tier_rule_keeps_large_moderate_and_small_very_bright_components() -> None:
    from model.postprocessing import Rule, components, levels

    prob = np.zeros((40, 40))
    prob[1:13, 1:13] = 0.7  # 144 px, peak 0.7: large with a moderate peak: kept
    prob[20:23, 20:23] = 0.6  # 9 px, peak 0.995: small with a very high peak: kept
    prob[21, 21] = 0.995
    prob[30:33, 30:33] = 0.9  # 9 px, peak 0.9: small and only bright: dropped
    prob[1:11, 25:35] = 0.55  # 100 px, peak 0.55: large but too faint: dropped
    rule = Rule(0.5, 120, 0.6, small_component_px=5, small_peak=0.99)
    assert rule.cuts == (0.6, 0.99)
    lv = levels(prob, rule)
    assert lv[21, 21] == 3
    assert lv[2, 2] == 2
    assert lv[31, 31] == 2
    assert lv[5, 30] == 1
    mask = components(lv, rule).mask()
    assert mask[1:13, 1:13].all()
    assert mask[20:23, 20:23].all()
    assert not mask[30:33, 30:33].any()
    assert not mask[1:11, 25:35].any()
    assert mask.sum() == 144 + 9
    # without the second tier the small bright one goes too
    one_tier = Rule(0.5, 120, 0.6)
    assert components(levels(prob, one_tier), one_tier).mask().sum() == 144
    # a manifest's block reads back to the same rule
    block = {"min_component_px": 120, "min_peak": 0.6, "small_component_px": 5, "small_peak": 0.99}
    assert Rule.of(0.5, block) == rule


def test_a_peak_is_reached_as_on_the_uint8_maps_the_rule_was_chosen_on() -> None:
    """Rules are chosen on uint8 maps, where a peak of 1.0 is a saturated pixel (255):
    a float 0.999 reaches it, in numpy and in the predictor's torch path alike."""
    import torch

    from model.postprocessing import Rule, components, levels
    from model.predictor import device_levels

    prob = np.zeros((30, 30), np.float32)
    prob[2:8, 2:8] = 0.6
    prob[4, 4] = 0.999  # round(255 × 0.999) = 255: reaches 1.0
    prob[20:26, 20:26] = 0.6
    prob[22, 22] = 0.997  # round(255 × 0.997) = 254: does not
    rule = Rule(0.5, 100, 0.9, small_component_px=10, small_peak=1.0)
    assert rule.cut_levels() == (230, 255)
    for lv in (levels(prob, rule), device_levels([torch.from_numpy(prob)], rule)[0]):
        assert lv[4, 4] == 3
        assert lv[22, 22] == 2
        mask = components(lv, rule).mask()
        assert mask[2:8, 2:8].all()
        assert not mask[20:26, 20:26].any()
