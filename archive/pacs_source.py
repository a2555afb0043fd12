"""The DICOMweb archive source: the PET series of a PACS that a scan may submit.

Beside the folder source (``archive/sources.py``). For one endpoint:

1. QIDO-RS: studies with ``ModalitiesInStudy=PT`` whose StudyDate lies in the window,
   then their PET series, then each series' SOPInstanceUIDs.
2. A series' identity is the SHA-256 of its SeriesInstanceUID and sorted
   SOPInstanceUIDs (:func:`series_identity`). One already submitted is not looked at
   again: the identity is the archive entry's content hash, so "never twice" is the
   database's unique constraint, as for files.
3. WADO-RS metadata of the others (headers only), checked: PET Image Storage,
   ``ImageType`` ORIGINAL, static (not ``SeriesType`` DYNAMIC or GATED),
   ``CorrectedImage`` with ATTN (else *skipped*, with the reason); complete, i.e. as many
   instances as ``NumberOfSlices`` (0054,0081) (fewer: *skipped* as still arriving,
   taken by a later scan); the geometry every slice needs, one size for all (else a
   *problem*: malformed, never rendered). The SUV factor comes
   from the same headers (``archive/suv.py``).

Retrieving the instances and rendering them happen at submission
(:func:`render_series`), through the folder series' path (``archive/rendering.py``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydicom.dataset import Dataset

from archive.dicomweb import DicomwebArchive, PacsError
from archive.rendering import RenderedStudy, RenderError, RenderOptions, render_datasets
from archive.sources import Problem
from archive.suv import SuvFactor, SuvTags, suv_factor

logger = logging.getLogger(__name__)

#: Archive-entry kind of a series from a PACS.
DICOMWEB = "dicomweb"
#: PET Image Storage: one slice per instance (Enhanced PET is not taken).
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
#: Patient and study attributes that the objects sent back repeat (DICOM keywords).
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def series_identity(series_uid: str, sop_instance_uids: Sequence[str]) -> str:
    """A PACS series' identity: SHA-256 (hex) of its UID and its sorted instance UIDs.

    An instance added to or removed from the series makes another identity; the order
    the PACS lists them in does not.
    """
    digest = hashlib.sha256(b"dicomweb-series\0" + series_uid.encode() + b"\0")
    digest.update("\n".join(sorted(sop_instance_uids)).encode())
    return digest.hexdigest()


def endpoint_root(endpoint: str) -> str:
    """The archive entries' ``root`` of a PACS endpoint's studies."""
    return f"{DICOMWEB}:{endpoint}"


@dataclass(frozen=True)
class PacsSeries:
    """A complete PET series of a PACS that passed the checks.

    Attributes:
        endpoint: The endpoint's name.
        study_instance_uid: Its study, where the results go back.
        series_instance_uid: The series.
        sop_class_uid: Its instances' SOP class.
        sop_instance_uids: Its instances, sorted.
        patient: The patient and study attributes (``PATIENT_KEYWORDS``, as text).
        units: Its Units (0054,1001).
        suv: Its SUV factor, or why it has none.
    """

    endpoint: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    patient: dict[str, str]
    units: str | None
    suv: SuvFactor

    @property
    def identity(self) -> str:
        """:func:`series_identity` of the series."""
        return series_identity(self.series_instance_uid, self.sop_instance_uids)

    @property
    def root(self) -> str:
        """The archive entry's root."""
        return endpoint_root(self.endpoint)

    @property
    def path(self) -> str:
        """The archive entry's path: study and series UIDs."""
        return f"{self.study_instance_uid}/{self.series_instance_uid}"


@dataclass
class PacsScan:
    """What a look at one endpoint found.

    Attributes:
        series: New series that may be submitted.
        skipped: Series left out by rule (not original, not attenuation corrected, not
            PET Image Storage, still arriving), with the reason.
        problems: Malformed series, and a PACS that failed to answer.
        already_done: Series whose identity was submitted before.
    """

    series: list[PacsSeries] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    already_done: int = 0


class Skipped(ValueError):
    """A series left out by rule (not an error of the series)."""


class Malformed(ValueError):
    """A series whose headers cannot make a volume."""


def scan_endpoint(
    archive: DicomwebArchive,
    start: date,
    end: date,
    known: Callable[[Sequence[str]], set[str]],
) -> PacsScan:
    """Find the new, complete, usable PET series of one endpoint.

    Args:
        archive: The endpoint's DICOMweb service.
        start: First StudyDate of the window.
        end: Last StudyDate of the window.
        known: Which of these identities were submitted before (the database's answer).

    Returns:
        The series to submit, those skipped and the problems; a PACS that fails is one
        problem, never an exception.
    """
    scan = PacsScan()
    name = archive.endpoint.name
    try:
        studies = archive.pet_studies(start, end)
    except PacsError as exc:
        scan.problems.append(Problem(endpoint_root(name), str(exc)))
        return scan
    for study in studies:
        study_uid = str(getattr(study, "StudyInstanceUID", ""))
        try:
            _scan_study(archive, study_uid, known, scan)
        except PacsError as exc:
            scan.problems.append(Problem(f"{endpoint_root(name)}/{study_uid}", str(exc)))
    return scan


def _scan_study(
    archive: DicomwebArchive,
    study_uid: str,
    known: Callable[[Sequence[str]], set[str]],
    scan: PacsScan,
) -> None:
    name = archive.endpoint.name
    for series in archive.series(study_uid):
        series_uid = str(getattr(series, "SeriesInstanceUID", ""))
        where = f"{endpoint_root(name)}/{study_uid}/{series_uid}"
        uids = archive.instance_uids(study_uid, series_uid)
        if uids and known([series_identity(series_uid, uids)]):
            scan.already_done += 1
            continue
        metadata = archive.series_metadata(study_uid, series_uid)
        try:
            found = check_series(name, study_uid, series_uid, metadata)
        except Skipped as exc:
            scan.skipped.append(Problem(where, str(exc)))
            continue
        except Malformed as exc:
            scan.problems.append(Problem(where, f"malformed series, not rendered: {exc}"))
            continue
        if known([found.identity]):
            scan.already_done += 1
            continue
        scan.series.append(found)


def check_series(
    endpoint: str, study_uid: str, series_uid: str, metadata: Sequence[Dataset]
) -> PacsSeries:
    """Check a series' headers (see the module's notes) and describe it.

    Args:
        endpoint: The endpoint's name.
        study_uid: Its study.
        series_uid: The series.
        metadata: Every instance's header (WADO-RS metadata).

    Returns:
        The series, with its SUV factor.

    Raises:
        Skipped: Left out by rule: not PET Image Storage, not ORIGINAL, not attenuation
            corrected, or still arriving.
        Malformed: Missing or contradictory tags.
    """
    if not metadata:
        raise Skipped("no instances yet")
    classes = {str(getattr(ds, "SOPClassUID", "")) for ds in metadata}
    if classes != {PET_IMAGE_STORAGE}:
        raise Skipped(f"SOP class {', '.join(sorted(classes))}: only PET Image Storage is taken")
    first = metadata[0]
    image_type = [str(v).upper() for v in _multi(first, "ImageType")]
    if not image_type or image_type[0] != "ORIGINAL":
        shown = "\\".join(image_type) or "missing"
        raise Skipped(f"ImageType {shown}: not an ORIGINAL series")
    series_type = [str(v).upper() for v in _multi(first, "SeriesType")]
    if series_type and series_type[0] in ("DYNAMIC", "GATED"):
        raise Skipped(f"SeriesType {series_type[0]}: only static series are taken")
    time_slices = getattr(first, "NumberOfTimeSlices", None)
    if time_slices is not None and str(time_slices).strip().isdigit() and int(time_slices) > 1:
        raise Skipped(f"NumberOfTimeSlices {int(time_slices)}: only static series are taken")
    corrected = [str(v).upper() for v in _multi(first, "CorrectedImage")]
    if "ATTN" not in corrected:
        shown = "\\".join(corrected) or "missing"
        raise Skipped(f"not attenuation corrected (CorrectedImage {shown})")
    expected = getattr(first, "NumberOfSlices", None)
    if expected is None or not str(expected).strip().isdigit() or int(expected) < 1:
        raise Malformed("NumberOfSlices (0054,0081) is missing")
    uids = sorted({str(getattr(ds, "SOPInstanceUID", "")) for ds in metadata})
    if len(uids) < int(expected):
        raise Skipped(
            f"still arriving: {len(uids)} of {int(expected)} instances (NumberOfSlices); "
            "a later scan takes it"
        )
    if len(uids) > int(expected):
        raise Malformed(f"{len(uids)} instances but NumberOfSlices is {int(expected)}")
    _check_geometry(metadata)
    return PacsSeries(
        endpoint=endpoint,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_class_uid=PET_IMAGE_STORAGE,
        sop_instance_uids=tuple(uids),
        patient={k: _text(first, k) for k in PATIENT_KEYWORDS},
        units=str(getattr(first, "Units", "") or "") or None,
        suv=suv_factor(SuvTags.from_datasets(metadata)),
    )


def _check_geometry(metadata: Sequence[Dataset]) -> None:
    for ds in metadata:
        missing = [k for k in _GEOMETRY if getattr(ds, k, None) in (None, "")]
        if missing:
            raise Malformed(f"instance {getattr(ds, 'SOPInstanceUID', '?')} lacks {missing}")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in metadata}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise Malformed(f"instances of different sizes ({shown})")
    orientations = {
        tuple(round(float(v), 4) for v in ds.ImageOrientationPatient) for ds in metadata
    }
    if len(orientations) > 1:
        raise Malformed("instances of different orientations")


def render_series(
    archive: DicomwebArchive, series: PacsSeries, options: RenderOptions
) -> RenderedStudy:
    """Retrieve a series' instances (WADO-RS) and render them like a folder's series.

    Raises:
        PacsError: The PACS failed.
        archive.rendering.RenderError: The instances are not those checked, or cannot be
            rendered.
    """
    datasets = archive.series_instances(series.study_instance_uid, series.series_instance_uid)
    got = tuple(sorted(str(getattr(ds, "SOPInstanceUID", "")) for ds in datasets))
    if got != series.sop_instance_uids:
        raise RenderError("the series changed since its headers were read; a later scan takes it")
    return render_datasets(datasets, options)


def _multi(ds: Dataset, keyword: str) -> list[Any]:
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _text(ds: Dataset, keyword: str) -> str:
    value = getattr(ds, keyword, None)
    return "" if value is None else str(value)
