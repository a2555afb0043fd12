import numpy as np
import pytest

from model.metrics import dice, precision_recall, study_metrics


def test_dice_matches_the_competition_formula() -> None:
    pred = np.zeros((10, 10), bool)
    truth = np.zeros((10, 10), bool)
    pred[0:2, 0:5] = True  # 10 px
    truth[0:2, 0:3] = True  # 6 px, overlap 6
    assert dice(pred, truth) == pytest.approx(2 * 6 / (10 + 6))
    assert dice(np.zeros_like(truth), truth) == 0.0
    assert precision_recall(pred, truth) == (pytest.approx(0.6), pytest.approx(1.0))


def test_study_metrics_count_lesions_and_uptake() -> None:
    image = np.zeros((20, 20), np.float32)
    image[2:18, 2:18] = 0.3
    mask = np.zeros((20, 20), bool)
    mask[3:5, 3:5] = True  # 4 px
    mask[10:13, 10:13] = True  # 9 px
    image[10:13, 10:13] = 0.9
    m = study_metrics(image, mask, label=mask)
    assert m["tumor_pixels"] == 13
    assert m["lesions"] == 2
    assert m["largest_lesion_px"] == 9
    assert m["uptake_max"] == pytest.approx(0.9)
    assert m["tumor_fraction"] == pytest.approx(13 / 256)
    assert m["dice"] == 1.0
    assert m["precision"] == 1.0
    assert m["recall"] == 1.0
    assert study_metrics(image, np.zeros_like(mask))["uptake_mean"] is None
