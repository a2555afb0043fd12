"""A PACS study's results as DICOM objects (highdicom), new series in its own study.

* ``sc``: Secondary Capture of the MIP the model saw (``DERIVED\\SECONDARY``), its
  source PET instances in SourceImageSequence, patient orientation L\\F (columns run
  to the patient's left, rows to the feet) and the pixel spacing.
* ``seg``: binary DICOM SEG on that Secondary Capture, one segment "Neoplasm"
  (SNOMED CT 108369006, category 49755003 Morphologically abnormal structure), with
  the model in SegmentationAlgorithmIdentificationSequence.
* ``sr``: Comprehensive 3D SR, TID 1500 measurement report (``archive/dicom_sr.py``):
  the study's tumor area, lesion count, sDmax and SUVmax (TID 1501), and one planar ROI
  per lesion (TID 1410, its box on the Secondary Capture) with its area, SUVmax and
  SUVmean.
* ``overlay``: RGB Secondary Capture of the MIP with the tumor tinted, for viewers
  that do not draw a SEG.

Every object names the model version and the artifact's SHA-256
(ContributingEquipmentSequence; the SEG also in its algorithm identification) and says
it is not for diagnostic use (series description, contribution description, image
comments). UIDs are derived from the study, the series' identity, the model version
and the object kind (:func:`output_uid`), so building the objects again gives the same
UIDs, and a retried export never makes a second copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from archive.dicom_sr import MANUFACTURER, NEOPLASM, NOT_FOR_DIAGNOSTIC_USE, measurement_report

SC = "sc"
SEG = "seg"
SR = "sr"
OVERLAY = "overlay"
#: The kinds in sending order: the SEG and the SR reference the Secondary Capture.
KINDS = (SC, SEG, SR, OVERLAY)
SERIES_NUMBERS = {SC: 9901, SEG: 9902, SR: 9903, OVERLAY: 9904}
_DESCRIPTIONS = {
    SC: "tumorseg MIP",
    SEG: "tumorseg tumor SEG",
    SR: "tumorseg measurements",
    OVERLAY: "tumorseg MIP overlay",
}

ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
_TINT = np.array([220.0, 30.0, 30.0])
_TINT_ALPHA = 0.5


def output_uid(study_uid: str, identity: str, model_version: str, kind: str, level: str) -> str:
    """A UID for one output object, the same every time for the same inputs.

    ``2.25.`` and the integer of the first 128 bits of a SHA-256 over the inputs (the
    UUID-derived form of PS3.5 B.2).

    Args:
        study_uid: The source study.
        identity: The source series' identity.
        model_version: The model that made the results.
        kind: ``sc``, ``seg``, ``sr`` or ``overlay``.
        level: ``series`` or ``instance`` (or another name, e.g. for tracking UIDs).
    """
    text = "\0".join(("tumorseg-output", study_uid, identity, model_version, kind, level))
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    return f"2.25.{value}"


@dataclass(frozen=True)
class SourceSeries:
    """The PET series the results were computed from.

    Attributes:
        study_instance_uid: Its study, where the objects go.
        series_instance_uid: The series.
        sop_class_uid: Its instances' SOP class.
        sop_instance_uids: Its instances.
        identity: Its identity (``archive/pacs_source.py::series_identity``).
        patient: Patient and study attributes by DICOM keyword.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    identity: str
    patient: Mapping[str, str]


@dataclass(frozen=True)
class Provenance:
    """What made the results.

    Attributes:
        model_version: The model version.
        artifact_sha256: The SHA-256 of the artifact's weights (its manifest's
            ``weights_sha256``), or ``unknown``.
        software_version: The service's version.
        made_at: When the results were made (content date and time of every object).
    """

    model_version: str
    artifact_sha256: str
    software_version: str
    made_at: datetime

    @property
    def statement(self) -> str:
        """The contribution description every object carries."""
        return (
            f"Automatic tumor segmentation by tumorseg, model {self.model_version}, "
            f"artifact SHA-256 {self.artifact_sha256}. {NOT_FOR_DIAGNOSTIC_USE}."
        )


@dataclass(frozen=True)
class LesionFinding:
    """One lesion as the SR reports it (pixels of the MIP, row 0 at the top)."""

    number: int
    bbox: tuple[int, int, int, int]  # row0, col0, row1, col1; ends excluded
    area_px: int
    area_mm2: float | None
    suv_max: float | None
    suv_mean: float | None


@dataclass(frozen=True)
class Findings:
    """The results of one study, as the objects show them.

    Attributes:
        mip: uint8 (H, W) MIP the model saw (white background, high uptake dark).
        mask: bool (H, W) predicted mask.
        spacing_mm: Pixel size (rows, columns) in mm, when known.
        tumor_area_px: Tumor pixels.
        tumor_area_cm2: Tumor area in cm² (None without spacing).
        lesion_count: Lesions.
        sdmax_cm: Largest distance between two lesions' centroids, cm (None without
            spacing).
        suv_max: The highest lesion SUVmax (None without SUV).
        lesions: Each lesion.
    """

    mip: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, float] | None
    tumor_area_px: int
    tumor_area_cm2: float | None
    lesion_count: int
    sdmax_cm: float | None
    suv_max: float | None
    lesions: tuple[LesionFinding, ...] = ()


def planned_objects(
    source: SourceSeries, model_version: str, kinds: Sequence[str]
) -> list[dict[str, object]]:
    """The outbox's list of objects: kind, UIDs, not yet stored; in sending order."""
    return [
        {
            "kind": kind,
            "series_instance_uid": _uid(source, model_version, kind, "series"),
            "sop_instance_uid": _uid(source, model_version, kind, "instance"),
            "stored": False,
        }
        for kind in KINDS
        if kind in kinds
    ]


def build_objects(
    source: SourceSeries, provenance: Provenance, findings: Findings, kinds: Sequence[str]
) -> dict[str, Dataset]:
    """Build the objects of ``kinds`` (the SEG and SR always with their SC).

    Raises:
        ValueError: The mask and the MIP differ in shape, or highdicom refuses a value.
    """
    if findings.mip.shape != findings.mask.shape:
        raise ValueError(f"MIP {findings.mip.shape} and mask {findings.mask.shape} differ")
    sc = _secondary_capture(source, provenance, findings, SC, findings.mip, "MONOCHROME2")
    built: dict[str, Dataset] = {SC: sc}
    if SEG in kinds:
        built[SEG] = _segmentation(source, provenance, findings, sc)
    if SR in kinds:
        version = provenance.model_version
        built[SR] = measurement_report(
            sc,
            findings,
            provenance,
            uid=lambda level: _uid(source, version, SR, level),
            device_uid=output_uid(MANUFACTURER, "device", version, SR, "device"),
            attributes=_common(source, provenance, SR),
        )
    if OVERLAY in kinds:
        rgb = overlay_rgb(findings.mip, findings.mask)
        built[OVERLAY] = _secondary_capture(source, provenance, findings, OVERLAY, rgb, "RGB")
    return {kind: built[kind] for kind in KINDS if kind in kinds}


def overlay_rgb(mip: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The MIP in RGB with the tumor tinted red."""
    rgb = np.repeat(mip[..., None].astype(np.float64), 3, axis=2)
    rgb[mask] = (1 - _TINT_ALPHA) * rgb[mask] + _TINT_ALPHA * _TINT
    return np.round(rgb).astype(np.uint8)


# -- the objects ----------------------------------------------------------------------
def _uid(source: SourceSeries, model_version: str, kind: str, level: str) -> str:
    return output_uid(source.study_instance_uid, source.identity, model_version, kind, level)


def _equipment(provenance: Provenance) -> hd.ContributingEquipment:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=provenance.model_version[:64],
        software_versions=provenance.software_version,
        device_serial_number=provenance.artifact_sha256[:64],
        contribution_datetime=provenance.made_at,
        contribution_description=provenance.statement,
    )


def _common(source: SourceSeries, provenance: Provenance, kind: str) -> dict[str, object]:
    return {
        "series_instance_uid": _uid(source, provenance.model_version, kind, "series"),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": _uid(source, provenance.model_version, kind, "instance"),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "series_description": f"{_DESCRIPTIONS[kind]} ({NOT_FOR_DIAGNOSTIC_USE})",
        "content_date": provenance.made_at.date(),
        "content_time": provenance.made_at.time().replace(microsecond=0),
        "contributing_equipment": [_equipment(provenance)],
    }


def _reference(source: SourceSeries) -> Dataset:
    """A dataset with the patient and study attributes the new objects repeat."""
    ref = Dataset()
    for keyword, value in source.patient.items():
        setattr(ref, keyword, value)
    ref.StudyInstanceUID = source.study_instance_uid
    return ref


def _secondary_capture(
    source: SourceSeries,
    provenance: Provenance,
    findings: Findings,
    kind: str,
    pixels: np.ndarray,
    photometric: str,
) -> Dataset:
    sc = hd.sc.SCImage.from_ref_dataset(
        _reference(source),
        np.ascontiguousarray(pixels),
        photometric,
        8,
        "PATIENT",
        pixel_spacing=findings.spacing_mm,  # type: ignore[arg-type]  # highdicom: floats
        patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        **_common(source, provenance, kind),  # type: ignore[arg-type]
    )
    # General Image module: where the MIP comes from (highdicom has no argument for it)
    sc.DerivationDescription = "Coronal maximum intensity projection of the PET series"
    sc.DerivationCodeSequence = [hd.sr.CodedConcept.from_code(codes.DCM.MaximumIntensityProjection)]
    sc.SourceImageSequence = [
        _image_reference(source.sop_class_uid, uid) for uid in source.sop_instance_uids
    ]
    sc.ImageComments = f"{NOT_FOR_DIAGNOSTIC_USE}. Model {provenance.model_version}."
    sc.BurnedInAnnotation = "NO"
    sc.BodyPartExamined = "WHOLEBODY"
    return sc


def _image_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def _algorithm(provenance: Provenance) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="tumorseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=provenance.model_version,
        source=MANUFACTURER,
        parameters={"artifact_sha256": provenance.artifact_sha256},
    )


def _segmentation(
    source: SourceSeries, provenance: Provenance, findings: Findings, sc: Dataset
) -> Dataset:
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Neoplasm",
        segmented_property_category=ABNORMAL_STRUCTURE,
        segmented_property_type=NEOPLASM,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(provenance),
    )
    rows_mm, cols_mm = findings.spacing_mm or (1.0, 1.0)
    common = _common(source, provenance, SEG)
    common.pop("manufacturer")
    seg = hd.seg.Segmentation(
        source_images=[sc],
        pixel_array=findings.mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        manufacturer=MANUFACTURER,
        manufacturer_model_name=provenance.model_version[:64],
        software_versions=provenance.software_version,
        device_serial_number=provenance.artifact_sha256[:64],
        # highdicom reads a SEG back only with a slice thickness: the MIP's is the
        # whole projection, which the SC does not record; 1 mm stands for "a plane"
        pixel_measures=hd.PixelMeasuresSequence(
            pixel_spacing=(rows_mm, cols_mm), slice_thickness=1.0
        ),
        omit_empty_frames=False,
        content_label="TUMOR",
        content_description=f"Tumor on the MIP. {NOT_FOR_DIAGNOSTIC_USE}.",
        **common,  # type: ignore[arg-type]
    )
    # General Image module, type 2C without a frame of reference: the SC's orientation
    seg.PatientOrientation = sc.PatientOrientation
    return seg
