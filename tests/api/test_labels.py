"""Label matching by name, by patient number, by order."""

from __future__ import annotations

import pytest

from api.services.labels import LabelMatchError, match_labels


def test_same_name_and_patient_number_match() -> None:
    images = ["patient_001.png", "control_001.png", "study.png"]
    assert match_labels(images, ["segmentation_001.png", "study.png"]) == {0: 0, 2: 1}


def test_order_is_the_fallback_when_no_name_matches() -> None:
    assert match_labels(["a.png", "b.png"], ["x.png", "y.png"]) == {0: 0, 1: 1}
    with pytest.raises(LabelMatchError):
        match_labels(["a.png", "b.png"], ["x.png", "y.png"], allow_order=False)


def test_ambiguous_or_unmatched_labels_are_refused() -> None:
    with pytest.raises(LabelMatchError, match="both match"):
        match_labels(["patient_001.png"], ["patient_001.png", "segmentation_001.png"])
    with pytest.raises(LabelMatchError, match="segmentation_009"):
        match_labels(["patient_001.png", "b.png"], ["segmentation_001.png", "segmentation_009.png"])
    assert match_labels(["a.png"], []) == {}
