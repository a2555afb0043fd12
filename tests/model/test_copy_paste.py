"""Copy-paste lesions, hard negatives and the hard-pixel loss on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.training.copy_paste import (
    Lesion,
    LesionPaster,
    PasteConfig,
    body_box,
    extract_lesions,
    paste,
)
from model.training.hard_negatives import bright_pixels
from model.training.losses import DiceBCELoss, hardest_negative_bce


def _body(h: int = 40, w: int = 30, level: float = 0.2) -> np.ndarray:
    img = np.zeros((h, w), np.float32)
    img[5:35, 5:25] = level
    return img


def test_a_lesion_is_cut_with_its_local_background_removed() -> None:
    img = _body()
    img[10:14, 10:13] = 0.2 + np.array([[0.1, 0.3, 0.1]] * 4, np.float32)
    label = np.zeros_like(img)
    label[10:14, 10:13] = 1.0
    (lesion,) = extract_lesions(img, label, min_px=4)
    assert lesion.mask.shape == (4, 3)
    assert lesion.mask.all()
    np.testing.assert_allclose(lesion.excess, [[0.1, 0.3, 0.1]] * 4, atol=1e-6)
    assert lesion.body_uptake == pytest.approx(0.2)
    # its centre (12, 11.5) relative to the body box rows 5..35, columns 5..25
    assert lesion.site == pytest.approx(((12 - 5) / 30, (11.5 - 5) / 20))


def test_lesions_outside_the_size_range_are_left_out() -> None:
    img = _body()
    label = np.zeros_like(img)
    label[10, 10] = 1.0  # 1 px
    label[20:30, 8:22] = 1.0  # 140 px
    assert extract_lesions(img, label, min_px=4, max_px=100) == []
    assert len(extract_lesions(img, label, min_px=1, max_px=200)) == 2


def test_a_pasted_lesion_is_labelled_exactly_where_it_wins() -> None:
    host = _body(level=0.3)
    host[10:14, 12] = 0.9  # bright physiological uptake through the lesion's middle column
    label = np.zeros_like(host)
    excess = np.full((4, 3), 0.2, np.float32)
    excess[0, 0] = 0.0  # a mask pixel with no excess: the host's background, not brighter
    lesion = Lesion(excess, np.ones((4, 3), bool), (0.5, 0.5), 0.3)
    out, lab = paste(host, label, lesion, center=(12, 12), scale=1.0)
    # box rows 10..14, columns 11..14; its host median is 0.3, so the lesion is 0.5
    expected_win = np.zeros_like(host, bool)
    expected_win[10:14, 11:14] = True
    expected_win[10:14, 12] = False  # the 0.9 uptake stays brighter
    expected_win[10, 11] = False  # 0.3 + 0 does not beat 0.3
    np.testing.assert_array_equal(lab > 0, expected_win)
    np.testing.assert_allclose(out[expected_win], 0.5)
    np.testing.assert_array_equal(out[~expected_win], host[~expected_win])
    assert (out >= host).all(), "a max-composite never darkens the host"
    assert label.sum() == 0, "the inputs are not modified"


def test_pasting_keeps_the_hosts_own_labels_and_clips_at_the_edges() -> None:
    host = _body(level=0.3)
    label = np.zeros_like(host)
    label[0:3, 0:3] = 1.0
    lesion = Lesion(np.full((5, 5), 0.5, np.float32), np.ones((5, 5), bool), (0.0, 0.0), 0.3)
    out, lab = paste(host, label, lesion, center=(0, 0), scale=1.0)
    assert out.shape == host.shape
    assert lab[0:3, 0:3].all()
    assert (out >= host).all()


def test_the_paster_scales_uptake_and_is_reproducible() -> None:
    donor = _body(level=0.2)
    donor[15:19, 10:14] = 0.6
    donor_label = np.zeros_like(donor)
    donor_label[15:19, 10:14] = 1.0
    cfg = PasteConfig(p_paste=1.0, max_lesions=1, p_usual_site=1.0, uptake_jitter=(1.0, 1.0))
    host = _body(level=0.4)  # twice the donor's uptake
    bright = np.zeros((0, 2), int)
    results = []
    for _ in range(2):
        paster = LesionPaster([(donor, donor_label)], cfg, seed=5)
        results.append(paster(host, np.zeros_like(host), 0.4, body_box(host), (0, 0), bright))
    (out, lab), (out2, lab2) = results
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(lab, lab2)
    # at the usual site (the same place in the same body box), excess 0.4 doubled
    assert lab.sum() == 16
    np.testing.assert_allclose(out[lab > 0], 1.0)  # 0.4 + 0.4 x 2 = 1.2, clipped at 1
    ys, xs = np.nonzero(lab)
    assert (ys.min(), xs.min()) == (15, 10)


def test_lesions_next_to_uptake_land_beside_the_bright_pixels() -> None:
    donor = _body(level=0.2)
    donor[15:17, 10:12] = 0.5
    donor_label = np.zeros_like(donor)
    donor_label[15:17, 10:12] = 1.0
    cfg = PasteConfig(
        p_paste=1.0, max_lesions=1, p_usual_site=0.0, p_near_uptake=1.0, uptake_jitter=(1, 1)
    )
    host = np.zeros((80, 80), np.float32)
    host[10:70, 10:70] = 0.2
    bright = np.array([[40, 40]])
    paster = LesionPaster([(donor, donor_label)], cfg, seed=1)
    for _ in range(10):
        _, lab = paster(host, np.zeros_like(host), 0.2, body_box(host), (0, 0), bright)
        ys, xs = np.nonzero(lab)
        d = np.hypot(ys.mean() - 40, xs.mean() - 40)
        assert 0.5 <= d <= 1.0 + 6.0 + 1.5, d  # radius 1 + 1..6 px, and rounding


def test_bright_pixels_are_the_bodys_top_percentile_outside_the_tumor() -> None:
    img = _body(level=0.2)
    img[20, 15] = 0.9  # the heart, say
    img[30, 8] = 0.95  # a tumor
    tumor = np.zeros(img.shape, bool)
    tumor[30, 8] = True
    found = bright_pixels(img, 99.5, exclude=tumor)
    assert found.tolist() == [[20, 15]]
    assert bright_pixels(np.zeros((5, 5), np.float32)).shape == (0, 2)


def test_hard_negative_crops_centre_on_the_brightest_uptake() -> None:
    from model.dataset import Study
    from model.training.hard_negatives import HardNegativeConfig
    from model.training.sampling import CropConfig, CropSampler

    patient = Study("p", _body(64, 64), np.zeros((64, 64), bool), True)
    patient.label[30:34, 30:34] = True
    control_img = np.zeros((200, 200), np.float32)
    control_img[20:180, 20:180] = 0.2
    control_img[150:153, 40:43] = 0.9  # the bladder: the only bright uptake
    control = Study("c", control_img, np.zeros((200, 200), bool), False)
    cfg = CropConfig(
        height=32,
        width=32,
        p_tumor=0.0,
        p_control=1.0,
        scale=(1.0, 1.0),
        hard_negatives=HardNegativeConfig(p_bright=1.0, percentile=99.0),
    )
    sampler = CropSampler([patient, control], cfg, seed=0, input_scale=1.0)
    for _ in range(20):
        host, y0, x0 = sampler._window(32, 32)
        assert host.study.name == "c"
        # the centre is within the jitter (a third of the crop, 11 px) of the 3-px bladder
        assert abs(y0 + 16 - 151) <= 11 + 1
        assert abs(x0 + 16 - 41) <= 11 + 1


def test_the_hard_pixel_term_averages_the_worst_negative_pixels() -> None:
    logits = torch.full((2, 1, 10, 10), -10.0)
    logits[0, 0, 0, 0] = 10.0  # one confident false positive in a negative image
    target = torch.zeros(2, 1, 10, 10)
    target[1, 0, 5, 5] = 1.0  # the second image has tumor: not a negative
    hard = hardest_negative_bce(logits, target, fraction=0.01)  # 1 pixel of 100
    assert float(hard) == pytest.approx(10.0, abs=1e-3)  # BCE of logit 10 against 0
    plain = DiceBCELoss()(logits, target)
    weighted = DiceBCELoss(lambda_hard=2.0, hard_fraction=0.01)(logits, target)
    assert float(weighted - plain) == pytest.approx(20.0, abs=1e-2)
    assert float(hardest_negative_bce(logits[1:], target[1:], 0.5)) == 0.0
    with pytest.raises(ValueError, match="hard_fraction"):
        DiceBCELoss(hard_fraction=0.0)
