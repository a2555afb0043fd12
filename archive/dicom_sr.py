"""The measurement report a study's results go back to its PACS with: a Comprehensive
3D SR, TID 1500 (highdicom).

One TID 1501 group for the study (tumor area, number of lesions, sDmax as the largest
distance, SUVmax as SUVbw with derivation maximum) and one TID 1410 planar ROI group per
lesion (its box on the Secondary Capture as a closed polyline, its area, SUVmax and
SUVmean). SUV rows appear only where the study has an SUV; areas are in cm² with a
pixel spacing, else in pixels. The observer is the device: tumorseg and its model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

if TYPE_CHECKING:
    from archive.dicom_results import Findings, LesionFinding, Provenance

MANUFACTURER = "tumorseg"
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
NEOPLASM = codes.SCT.Neoplasm
SUVBW = Code("126401", "DCM", "SUVbw")
SUVBW_UNIT = codes.UCUM.StandardizedUptakeValueBodyWeight
PIXELS = Code("{pixels}", "UCUM", "pixels")
LESIONS = Code("{lesions}", "UCUM", "lesions")
PET_WHOLE_BODY = codes.LN.PETWholeBody


def measurement_report(
    sc: Dataset,
    findings: Findings,
    provenance: Provenance,
    uid: Callable[[str], str],
    device_uid: str,
    attributes: Mapping[str, object],
) -> Dataset:
    """The TID 1500 report of a study's findings, its regions on the Secondary Capture.

    Args:
        sc: The Secondary Capture of the MIP (the evidence, and where regions lie).
        findings: The study's measurements and lesions.
        provenance: The model and its artifact.
        uid: The report's UID for a name (``study-tracking``, ``lesion-N``).
        device_uid: The observing device's UID.
        attributes: Series, instance and equipment attributes of the object.

    Returns:
        The Comprehensive 3D SR.
    """
    version = provenance.model_version
    algorithm = hd.sr.AlgorithmIdentification(
        name="tumorseg",
        version=version,
        parameters=[f"artifact_sha256={provenance.artifact_sha256}"],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=version[:64],
        ),
    )
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=uid("study-tracking"), identifier="Whole-body tumor"
            ),
            finding_type=NEOPLASM,
            algorithm_id=algorithm,
            measurements=_study_measurements(findings),
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(sc)],
        )
    ]
    for lesion in findings.lesions:
        groups.append(_lesion_group(uid, lesion, sc, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PET_WHOLE_BODY,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[sc],
        content=report,
        **attributes,  # type: ignore[arg-type]
    )


def _study_measurements(findings: Findings) -> list[hd.sr.Measurement]:
    if findings.tumor_area_cm2 is not None:
        area = hd.sr.Measurement(
            name=codes.SCT.Area, value=findings.tumor_area_cm2, unit=codes.UCUM.SquareCentimeter
        )
    else:
        area = hd.sr.Measurement(name=codes.SCT.Area, value=findings.tumor_area_px, unit=PIXELS)
    measurements = [
        area,
        hd.sr.Measurement(
            name=codes.SCT.NumberOfLesions, value=findings.lesion_count, unit=LESIONS
        ),
    ]
    if findings.sdmax_cm is not None:  # sDmax: the largest distance between two lesions
        measurements.append(
            hd.sr.Measurement(
                name=codes.DCM.Distance,
                value=findings.sdmax_cm,
                unit=codes.UCUM.Centimeter,
                derivation=codes.SCT.Maximum,
            )
        )
    if findings.suv_max is not None:
        measurements.append(_suv(findings.suv_max, codes.SCT.Maximum))
    return measurements


def _suv(value: float, derivation: Code) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=SUVBW,
        value=value,
        unit=SUVBW_UNIT,
        derivation=derivation,
        method=codes.DCM.SUVBodyWeightCalculationMethod,
    )


def _lesion_group(
    uid: Callable[[str], str],
    lesion: LesionFinding,
    sc: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    row0, col0, row1, col1 = lesion.bbox
    box = np.array(
        [[col0, row0], [col1, row0], [col1, row1], [col0, row1], [col0, row0]], dtype=np.float64
    )
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=box,
        source_image=hd.sr.SourceImageForRegion.from_source_image(sc),
    )
    if lesion.area_mm2 is not None:
        area = hd.sr.Measurement(
            name=codes.SCT.Area, value=lesion.area_mm2 / 100.0, unit=codes.UCUM.SquareCentimeter
        )
    else:
        area = hd.sr.Measurement(name=codes.SCT.Area, value=lesion.area_px, unit=PIXELS)
    measurements = [area]
    if lesion.suv_max is not None and lesion.suv_mean is not None:
        measurements.append(_suv(lesion.suv_max, codes.SCT.Maximum))
        measurements.append(_suv(lesion.suv_mean, codes.SCT.Mean))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid(f"lesion-{lesion.number}"),
            identifier=f"Lesion {lesion.number}",
        ),
        referenced_region=region,
        finding_type=NEOPLASM,
        algorithm_id=algorithm,
        measurements=measurements,
    )
