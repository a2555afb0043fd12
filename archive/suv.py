"""Body-weight SUV of a PET series, as QIBA describes it, and lesion SUVs on the MIP.

:func:`suv_factor` follows the QIBA vendor-neutral pseudo-code for SUVbw
(https://qibawiki.rsna.org/index.php/Standardized_Uptake_Value_(SUV)): the series must
be attenuation and decay corrected (CorrectedImage ``ATTN`` and ``DECY``), decay
corrected to the scan start (DecayCorrection ``START``) and in ``BQML``; the scan start
is the series date and time, which must not lie after the earliest acquisition (a
post-processed series; QIBA then reads vendor-private tags, which this service does not
guess). The injected dose decays from the injection to the scan start::

    decayed dose = RadionuclideTotalDose * 2 ** (-(scan start - injection) / half-life)
    SUVbw factor = PatientWeight [kg] * 1000 / decayed dose [Bq]   (g/ml per Bq/ml)

Units ``GML`` are SUVbw already (factor 1). Everything else, ``DecayCorrection ADMIN``
included, gets no factor and a note that says why: a value is never guessed.

A MIP's rendered PNG is clipped (``archive/rendering.py``) and cannot tell a lesion's
peak. The *quantitative MIP* (the unclipped MIP at the PNG's size, in the series'
units, stored as a 16-bit PNG with a slope) can: :func:`lesion_suv` gives each lesion of
a mask its SUVmax and SUVmean from it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

#: 8-connected components, as lesions are everywhere in the service.
_CONNECTIVITY = np.ones((3, 3), dtype=bool)
_UINT16_MAX = 65535


@dataclass(frozen=True)
class SuvTags:
    """What the SUV needs from a PET series' header (QIBA's inputs), parsed.

    Attributes:
        units: Units (0054,1001), e.g. ``BQML``, ``GML``, ``CNTS``.
        decay_correction: DecayCorrection (0054,1102): ``START``, ``ADMIN``, ``NONE``.
        corrected_image: CorrectedImage (0028,0051) values, e.g. ``ATTN``, ``DECY``.
        patient_weight_kg: PatientWeight (0010,1030).
        injected_dose_bq: RadionuclideTotalDose (0018,1074), at the injection.
        half_life_s: RadionuclideHalfLife (0018,1075).
        injection: RadiopharmaceuticalStartDateTime (0018,1078), else the series date
            with RadiopharmaceuticalStartTime (0018,1072).
        series_start: SeriesDate and SeriesTime.
        first_acquisition: The earliest AcquisitionDate and AcquisitionTime of the series.
    """

    units: str | None = None
    decay_correction: str | None = None
    corrected_image: tuple[str, ...] = ()
    patient_weight_kg: float | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    injection: datetime | None = None
    series_start: datetime | None = None
    first_acquisition: datetime | None = None

    @classmethod
    def from_datasets(cls, datasets: Sequence[Any]) -> SuvTags:
        """Read the tags from a series' instances (headers suffice; pydicom datasets).

        Series-level tags are read from the first instance; the acquisition time is the
        earliest over all of them. Absent or unreadable values are None.
        """
        first = datasets[0]
        series_date = _text(first, "SeriesDate")
        drug = _first_item(first, "RadiopharmaceuticalInformationSequence")
        injection = _datetime(_text(drug, "RadiopharmaceuticalStartDateTime"))
        if injection is None:
            injection = _date_time(series_date, _text(drug, "RadiopharmaceuticalStartTime"))
        acquisitions = [
            _date_time(_text(ds, "AcquisitionDate"), _text(ds, "AcquisitionTime"))
            for ds in datasets
        ]
        known = [a for a in acquisitions if a is not None]
        return cls(
            units=_text(first, "Units"),
            decay_correction=_text(first, "DecayCorrection"),
            corrected_image=tuple(str(v).upper() for v in _values(first, "CorrectedImage")),
            patient_weight_kg=_number(first, "PatientWeight"),
            injected_dose_bq=_number(drug, "RadionuclideTotalDose"),
            half_life_s=_number(drug, "RadionuclideHalfLife"),
            injection=injection,
            series_start=_date_time(series_date, _text(first, "SeriesTime")),
            first_acquisition=min(known) if known else None,
        )


@dataclass(frozen=True)
class SuvFactor:
    """A series' body-weight SUV factor, or why it has none.

    Attributes:
        factor: SUVbw per unit of the series' values (g/ml per Bq/ml for BQML); None
            when the tags do not allow an SUV.
        note: How it was computed, or why there is no SUV.
    """

    factor: float | None
    note: str


def suv_factor(tags: SuvTags) -> SuvFactor:
    """The SUVbw factor of a series by QIBA's algorithm (see the module's notes).

    Args:
        tags: The series' tags.

    Returns:
        The factor with how it was computed, or None with the reason.
    """
    units = (tags.units or "").upper()
    if units == "GML":
        return SuvFactor(1.0, "Units GML: the values are SUVbw already")
    if units != "BQML":
        return _none(f"Units {units or 'missing'}: only BQML (or GML) give an SUV")
    if "ATTN" not in tags.corrected_image:
        return _none("not attenuation corrected (CorrectedImage lacks ATTN)")
    if "DECY" not in tags.corrected_image:
        return _none("not decay corrected (CorrectedImage lacks DECY)")
    decay = (tags.decay_correction or "").upper()
    if decay == "ADMIN":
        return _none(
            "DecayCorrection ADMIN (decay corrected to the administration): QIBA's "
            "algorithm covers START only; refused rather than guessed"
        )
    if decay != "START":
        return _none(f"DecayCorrection {decay or 'missing'}: START is required")
    weight, dose, half_life = tags.patient_weight_kg, tags.injected_dose_bq, tags.half_life_s
    injection, start = tags.injection, tags.series_start
    missing = [
        name
        for name, value in (
            ("PatientWeight", weight),
            ("RadionuclideTotalDose", dose),
            ("RadionuclideHalfLife", half_life),
        )
        if value is None or not (math.isfinite(value) and value > 0)
    ]
    missing += ["RadiopharmaceuticalStartDateTime or StartTime"] if injection is None else []
    missing += ["SeriesDate and SeriesTime"] if start is None else []
    if missing or not (weight and dose and half_life and injection and start):
        return _none(f"missing or not positive: {', '.join(missing)}")
    if tags.first_acquisition is not None and start > tags.first_acquisition:
        return _none(
            "the series starts after its first acquisition (a post-processed series): the "
            "scan start would need vendor-private tags"
        )
    elapsed = (start - injection).total_seconds()
    if elapsed < 0:
        return _none("the injection is after the scan start")
    decayed = dose * 2.0 ** (-elapsed / half_life)
    factor = weight * 1000.0 / decayed
    return SuvFactor(
        factor,
        f"SUVbw (QIBA): {weight:g} kg, {dose / 1e6:.6g} MBq injected, decayed over "
        f"{elapsed / 60:.4g} min (half-life {half_life:g} s) to "
        f"{decayed / 1e6:.6g} MBq at the scan start",
    )


def _none(reason: str) -> SuvFactor:
    return SuvFactor(None, f"no SUV: {reason}")


# -- the quantitative MIP -------------------------------------------------------------
def encode_quant_mip(values: np.ndarray) -> tuple[bytes, float]:
    """A float MIP as a 16-bit grayscale PNG and the slope that restores it.

    Negative and non-finite values become 0. The slope is ``max / 65535`` (1 for an
    empty MIP), so the relative error is at most 1/131070 of the maximum.

    Returns:
        The PNG bytes and the slope (value = pixel × slope).
    """
    clean = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    clean = np.maximum(clean, 0.0)
    peak = float(clean.max()) if clean.size else 0.0
    slope = peak / _UINT16_MAX if peak > 0 else 1.0
    pixels = np.round(clean / slope).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), slope


def decode_quant_mip(data: bytes, slope: float) -> np.ndarray:
    """The float MIP of :func:`encode_quant_mip` (float64, the series' units)."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image)
    return pixels.astype(np.float64) * slope


# -- lesions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LesionSuv:
    """One lesion's SUVs on the MIP.

    Attributes:
        bbox: Its bounding box (row0, col0, row1, col1), end exclusive; the same box as
            ``model.lesions.Lesion.bbox``, by which the two are matched.
        area_px: Its pixels.
        suv_max: The highest SUVbw in it (the MIP's, so the lesion's own SUVmax).
        suv_mean: The mean SUVbw over its MIP pixels (each pixel is the maximum along its
            projection line, so this is not the 3D SUVmean).
    """

    bbox: tuple[int, int, int, int]
    area_px: int
    suv_max: float
    suv_mean: float


def lesion_suv(mask: np.ndarray, values: np.ndarray, factor: float) -> list[LesionSuv]:
    """SUVmax and SUVmean of each lesion of a mask, from the quantitative MIP.

    A pure function. Lesions are the mask's 8-connected components, in the order of
    ``model.lesions.find_lesions`` (largest first, then top, then left), so the k-th
    item is lesion number k; match by ``bbox`` to be sure.

    Args:
        mask: bool (H, W) predicted mask at the rendered PNG's size.
        values: (H, W) quantitative MIP in the series' units (:func:`decode_quant_mip`).
        factor: The study's SUV factor (:class:`SuvFactor`).

    Returns:
        One item per lesion.

    Raises:
        ValueError: The shapes differ or the factor is not positive.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != values.shape:
        raise ValueError(f"mask {mask.shape} and MIP {values.shape} differ in shape")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the SUV factor must be positive, got {factor}")
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    suv = values.astype(np.float64, copy=False) * factor
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    centroids = ndimage.center_of_mass(np.ones(mask.shape), labels, index)
    peaks = ndimage.maximum(suv, labels, index)
    means = ndimage.mean(suv, labels, index)
    boxes = ndimage.find_objects(labels)
    found = []
    for k in range(n):
        rows, cols = boxes[k]
        bbox = (int(rows.start), int(cols.start), int(rows.stop), int(cols.stop))
        item = LesionSuv(bbox, int(areas[k]), float(peaks[k]), float(means[k]))
        found.append((-int(areas[k]), float(centroids[k][0]), float(centroids[k][1]), item))
    found.sort(key=lambda f: f[:3])
    return [f[3] for f in found]


# -- header parsing -------------------------------------------------------------------
def _first_item(ds: Any, keyword: str) -> Any:
    sequence = getattr(ds, keyword, None) if ds is not None else None
    return sequence[0] if sequence else None


def _values(ds: Any, keyword: str) -> list[Any]:
    value = getattr(ds, keyword, None) if ds is not None else None
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _text(ds: Any, keyword: str) -> str | None:
    value = getattr(ds, keyword, None) if ds is not None else None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(ds: Any, keyword: str) -> float | None:
    value = getattr(ds, keyword, None) if ds is not None else None
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _datetime(value: str | None) -> datetime | None:
    """A DICOM DT (YYYYMMDDHHMMSS.FFFFFF, offsets dropped) as a naive datetime."""
    if not value:
        return None
    plain = value.split("+")[0].split("-")[0]
    return _date_time(plain[:8], plain[8:] or "000000")


def _date_time(date: str | None, time: str | None) -> datetime | None:
    """A DICOM DA and TM (HHMMSS.FFFFFF, or HH:MM:SS) as a naive datetime."""
    if not date or not time:
        return None
    try:
        day = datetime.strptime(date.replace("-", "").replace(".", ""), "%Y%m%d")
    except ValueError:
        return None
    clock = time.replace(":", "")
    whole, _, fraction = clock.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    whole = whole.ljust(6, "0")
    hours, minutes, seconds = int(whole[:2]), int(whole[2:4]), int(whole[4:6])
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    if hours > 23 or minutes > 59 or seconds > 60:
        return None
    return day + timedelta(hours=hours, minutes=minutes, seconds=seconds, microseconds=micro)
