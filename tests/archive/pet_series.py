"""Synthetic PET series as a PACS holds them: pydicom datasets with the SUV tags.

The volume is ``tests/archive/conftest.py``'s (in SUV); its values are stored in Bq/ml
through the hand-computed factor of :data:`SUV_FACTOR` (the defaults of :class:`PetTags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from tests.archive.conftest import SPACING, Volume

#: SUVbw per Bq/ml of the default tags, by hand: 75 kg, 370 MBq injected at 10:00, the
#: series at 11:00, F-18 (half-life 6586.2 s): 3.7e8 * 2**(-3600 / 6586.2) = 2.5331e8 Bq
#: at the scan start, and 75 * 1000 / 2.5331e8 = 2.9607e-4.
SUV_FACTOR = 2.9607e-4


@dataclass(frozen=True)
class PetTags:
    """The header values of a synthetic series (None: the tag is left out)."""

    study_date: str = ""  # empty: today
    weight_kg: float | None = 75.0
    dose_bq: float | None = 3.7e8
    half_life_s: float | None = 6586.2
    injection_time: str | None = "100000"
    injection_datetime: str | None = None
    series_time: str = "110000"
    acquisition_time: str = "110000"
    units: str = "BQML"
    decay_correction: str = "START"
    corrected_image: tuple[str, ...] = ("ATTN", "DECY")
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY")
    series_type: tuple[str, ...] = ("WHOLE BODY", "IMAGE")
    number_of_slices: int | None = -1  # -1: the slices made; None: left out


def with_tags(**changes: object) -> PetTags:
    """The default tags with some changed."""
    return replace(PetTags(), **changes)  # type: ignore[arg-type]


def pet_series(
    volume: Volume,
    tags: PetTags | None = None,
    study_uid: str | None = None,
    patient_id: str = "SYNTH-PET",
    factor: float = SUV_FACTOR,
    rows_of: dict[int, int] | None = None,
) -> list[Dataset]:
    """One axial PET series of the volume (SUV) stored in Bq/ml, one dataset per slice.

    Args:
        volume: The volume in SUV (RAS+).
        tags: Its header values.
        study_uid: Its study (a new one when None).
        patient_id: Its patient.
        factor: SUV per Bq/ml the values are stored with.
        rows_of: Slices to make of another height (index: rows), for a malformed series.
    """
    tags = tags or PetTags()
    study_date = tags.study_date or date.today().strftime("%Y%m%d")
    nx, ny, nz = volume.data.shape
    sx, sy, sz = SPACING
    series, study = generate_uid(), study_uid or generate_uid()
    n_slices = nz if tags.number_of_slices == -1 else tags.number_of_slices
    out = []
    for k in range(nz):
        plane = volume.data[::-1, ::-1, k].T / factor  # Bq/ml
        rows = (rows_of or {}).get(k, ny)
        plane = np.resize(plane, (rows, nx)) if rows != ny else plane
        slope = float(plane.max()) / 60000 if plane.max() > 0 else 1.0
        ds = Dataset()
        ds.preamble = b"\0" * 128  # a PS3.10 file, as a modality sends
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = PositronEmissionTomographyImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "PT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName = patient_id, "Synthetic^Pet"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = study_date
        ds.StudyTime, ds.SeriesTime = "105500", tags.series_time
        ds.AcquisitionTime = tags.acquisition_time
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC1", "1", ""
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageType = list(tags.image_type)
        ds.CorrectedImage = list(tags.corrected_image)
        ds.SeriesType = list(tags.series_type)
        ds.Units, ds.DecayCorrection = tags.units, tags.decay_correction
        if n_slices is not None:
            ds.NumberOfSlices = n_slices
        if tags.weight_kg is not None:
            ds.PatientWeight = tags.weight_kg
        ds.RadiopharmaceuticalInformationSequence = [_drug(tags)]
        ds.Rows, ds.Columns = rows, nx
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(nx - 1) * sx, -(ny - 1) * sy, k * sz]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, 0
        ds.PixelData = np.round(plane / slope).astype(np.uint16).tobytes()
        out.append(ds)
    return out


def _drug(tags: PetTags) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    if tags.injection_time is not None:
        item.RadiopharmaceuticalStartTime = tags.injection_time
    if tags.injection_datetime is not None:
        item.RadiopharmaceuticalStartDateTime = tags.injection_datetime
    if tags.dose_bq is not None:
        item.RadionuclideTotalDose = tags.dose_bq
    if tags.half_life_s is not None:
        item.RadionuclideHalfLife = tags.half_life_s
    return item


def stow(url: str, datasets: Sequence[Dataset], auth: tuple[str, str] | None = None) -> None:
    """Store instances into the PACS at ``url`` (STOW-RS), as a modality would."""
    import requests

    session = requests.Session()
    session.auth = auth
    client = DICOMwebClient(url, session=session)
    for start in range(0, len(datasets), 60):
        client.store_instances(list(datasets[start : start + 60]))
    session.close()
