"""Body-weight SUV by QIBA's algorithm on hand-computed cases, and lesion SUVs on a MIP."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from archive.suv import (
    SuvTags,
    decode_quant_mip,
    encode_quant_mip,
    lesion_suv,
    suv_factor,
)
from tests.archive.conftest import pet_volume
from tests.archive.pet_series import SUV_FACTOR, pet_series, with_tags

INJECTION = datetime(2026, 12, 1, 10, 0, 0)
SERIES = datetime(2026, 12, 1, 11, 0, 0)


def _tags(**changes: object) -> SuvTags:
    values: dict[str, object] = {
        "units": "BQML",
        "decay_correction": "START",
        "corrected_image": ("ATTN", "DECY"),
        "patient_weight_kg": 75.0,
        "injected_dose_bq": 3.7e8,
        "half_life_s": 6586.2,
        "injection": INJECTION,
        "series_start": SERIES,
        "first_acquisition": SERIES,
    }
    values.update(changes)
    return SuvTags(**values)  # type: ignore[arg-type]


def test_start_decay_corrected_bqml_gets_the_hand_computed_factor() -> None:
    # 3.7e8 Bq * 2 ** (-3600 s / 6586.2 s) = 2.5331e8 Bq at the scan start;
    # 75 kg * 1000 g/kg / 2.5331e8 Bq = 2.9607e-4 g/ml per Bq/ml
    result = suv_factor(_tags())
    assert result.factor == pytest.approx(2.9607e-4, rel=1e-4)
    assert result.factor == pytest.approx(SUV_FACTOR, rel=1e-4)
    assert "QIBA" in result.note
    assert "60 min" in result.note


def test_the_decay_runs_from_the_injection_datetime_across_midnight() -> None:
    # injected 23:30 the day before a series at 00:45: 4500 s of decay;
    # 3.7e8 * 2 ** (-4500 / 6586.2) = 2.3042e8 Bq, 75000 / 2.3042e8 = 3.2549e-4
    tags = _tags(
        injection=datetime(2026, 11, 30, 23, 30),
        series_start=datetime(2026, 12, 1, 0, 45),
        first_acquisition=datetime(2026, 12, 1, 0, 45),
    )
    assert suv_factor(tags).factor == pytest.approx(3.2549e-4, rel=1e-4)


def test_values_already_in_suv_have_factor_one() -> None:
    result = suv_factor(_tags(units="GML"))
    assert result.factor == 1.0
    assert "GML" in result.note


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"decay_correction": "ADMIN"}, "DecayCorrection ADMIN"),
        ({"decay_correction": "NONE"}, "DecayCorrection NONE"),
        ({"units": "CNTS"}, "Units CNTS"),
        ({"units": None}, "Units missing"),
        ({"corrected_image": ("DECY",)}, "not attenuation corrected"),
        ({"corrected_image": ("ATTN",)}, "not decay corrected"),
        ({"patient_weight_kg": None}, "PatientWeight"),
        ({"patient_weight_kg": 0.0}, "PatientWeight"),
        ({"injected_dose_bq": None}, "RadionuclideTotalDose"),
        ({"half_life_s": None}, "RadionuclideHalfLife"),
        ({"injection": None}, "RadiopharmaceuticalStartDateTime"),
        ({"series_start": None}, "SeriesDate and SeriesTime"),
        ({"first_acquisition": datetime(2026, 12, 1, 10, 50)}, "post-processed"),
        ({"injection": datetime(2026, 12, 1, 11, 30)}, "after the scan start"),
    ],
)
def test_no_suv_when_the_tags_do_not_allow_it_and_the_note_says_why(
    changes: dict[str, object], reason: str
) -> None:
    result = suv_factor(_tags(**changes))
    assert result.factor is None
    assert result.note.startswith("no SUV: ")
    assert reason in result.note


def test_admin_decay_correction_is_refused_explicitly_never_guessed() -> None:
    # an ADMIN series' values are decay corrected to the injection: the START formula
    # would be off by the decay factor (1.46 after an hour of F-18); it is refused
    result = suv_factor(_tags(decay_correction="ADMIN"))
    assert result.factor is None
    assert "QIBA" in result.note
    assert "refused" in result.note


def test_tags_are_read_from_the_series_headers() -> None:
    datasets = pet_series(pet_volume(seed=3))[:3]
    datasets[1].AcquisitionTime = "105959"  # the earliest acquisition of the series
    tags = SuvTags.from_datasets(datasets)
    assert tags.units == "BQML"
    assert tags.decay_correction == "START"
    assert tags.corrected_image == ("ATTN", "DECY")
    assert tags.patient_weight_kg == 75.0
    assert tags.injected_dose_bq == 3.7e8
    assert tags.half_life_s == 6586.2
    assert tags.injection is not None
    assert tags.series_start is not None
    assert tags.first_acquisition is not None
    assert (tags.series_start - tags.injection).total_seconds() == 3600
    assert (tags.series_start - tags.first_acquisition).total_seconds() == 1
    # a series that starts after its first acquisition is post-processed: no SUV
    assert suv_factor(tags).factor is None


def test_the_start_datetime_wins_over_the_start_time() -> None:
    tags = with_tags(
        study_date="20261201", injection_time="103000", injection_datetime="20261201100000.000000"
    )
    datasets = pet_series(pet_volume(seed=4), tags)
    parsed = SuvTags.from_datasets(datasets[:1])
    assert parsed.injection == datetime(2026, 12, 1, 10, 0, 0)
    assert suv_factor(parsed).factor == pytest.approx(SUV_FACTOR, rel=1e-4)


def test_quantitative_mip_survives_its_16_bit_png() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((50, 40)) * 40000.0
    values[3, 4] = -5.0  # negatives become 0
    data, slope = encode_quant_mip(values)
    back = decode_quant_mip(data, slope)
    assert back.shape == values.shape
    assert back[3, 4] == 0.0
    expected = np.maximum(values, 0)
    assert np.max(np.abs(back - expected)) <= slope / 2 + 1e-9
    assert back.max() == pytest.approx(expected.max(), rel=1e-9)


def test_lesion_suv_gives_max_and_mean_per_lesion_largest_first() -> None:
    values = np.zeros((20, 30))  # Bq/ml
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:4, 2:4] = True  # small lesion, 4 px: 1000 and 3000 Bq/ml
    values[2:4, 2:4] = [[1000.0, 1000.0], [1000.0, 3000.0]]
    mask[10:14, 10:15] = True  # large lesion, 20 px of 2000 with one of 6000
    values[10:14, 10:15] = 2000.0
    values[12, 12] = 6000.0
    values[0, 0] = 99999.0  # outside every lesion: never counted
    found = lesion_suv(mask, values, factor=0.5)
    assert [f.area_px for f in found] == [20, 4]
    assert found[0].bbox == (10, 10, 14, 15)
    assert found[0].suv_max == pytest.approx(3000.0)  # 6000 * 0.5
    assert found[0].suv_mean == pytest.approx((19 * 2000 + 6000) / 20 * 0.5)
    assert found[1].bbox == (2, 2, 4, 4)
    assert found[1].suv_max == pytest.approx(1500.0)
    assert found[1].suv_mean == pytest.approx(750.0)  # (3 * 1000 + 3000) / 4 * 0.5


def test_lesion_suv_joins_diagonal_neighbours_and_refuses_bad_input() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[1, 1] = mask[2, 2] = True  # 8-connected: one lesion
    assert len(lesion_suv(mask, np.ones((5, 5)), 1.0)) == 1
    assert lesion_suv(np.zeros((5, 5), dtype=bool), np.ones((5, 5)), 1.0) == []
    with pytest.raises(ValueError, match="shape"):
        lesion_suv(mask, np.ones((4, 5)), 1.0)
    with pytest.raises(ValueError, match="positive"):
        lesion_suv(mask, np.ones((5, 5)), 0.0)
