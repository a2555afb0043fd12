"""The objects sent back to a PACS: deterministic UIDs, provenance, SEG pixels, SR rows,
and dciodvfy's verdict (where dicom3tools is installed)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from archive import dicom_results as dr

PET = "1.2.840.10008.5.1.4.1.1.128"


def _source(study_uid: str | None = None) -> dr.SourceSeries:
    return dr.SourceSeries(
        study_instance_uid=study_uid or generate_uid(),
        series_instance_uid=generate_uid(),
        sop_class_uid=PET,
        sop_instance_uids=tuple(generate_uid() for _ in range(4)),
        identity="ab" * 32,
        patient={
            "PatientName": "Synthetic^Pet",
            "PatientID": "SYNTH-PET",
            "PatientBirthDate": "19600101",
            "PatientSex": "O",
            "StudyDate": "20261201",
            "StudyTime": "105500",
            "AccessionNumber": "ACC1",
            "StudyID": "1",
            "ReferringPhysicianName": "",
            "StudyDescription": "PET whole body",
        },
    )


PROVENANCE = dr.Provenance("attention-unet-test", "cd" * 32, "0.1.0", datetime(2026, 12, 1, 12))


def _findings() -> dr.Findings:
    mip = np.full((120, 80), 255, np.uint8)
    mip[20:30, 40:50] = 0
    mip[80:84, 10:14] = 30
    mask = mip < 128
    lesions = (
        dr.LesionFinding(1, (20, 40, 30, 50), 100, 400.0, 9.5, 6.25),
        dr.LesionFinding(2, (80, 10, 84, 14), 16, 64.0, 4.0, 3.5),
    )
    return dr.Findings(mip, mask, (2.0, 2.0), 116, 4.64, 2, 14.2, 9.5, lesions)


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_uids_are_the_same_for_the_same_inputs_and_differ_otherwise() -> None:
    source = _source()
    first = dr.build_objects(source, PROVENANCE, _findings(), dr.KINDS)
    again = dr.build_objects(source, PROVENANCE, _findings(), dr.KINDS)
    assert {k: d.SOPInstanceUID for k, d in first.items()} == {
        k: d.SOPInstanceUID for k, d in again.items()
    }
    uids = [d.SOPInstanceUID for d in first.values()] + [
        d.SeriesInstanceUID for d in first.values()
    ]
    assert len(set(uids)) == 8  # every object and series its own
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for uid in uids)
    planned = dr.planned_objects(source, PROVENANCE.model_version, dr.KINDS)
    assert [p["sop_instance_uid"] for p in planned] == [d.SOPInstanceUID for d in first.values()]
    other_model = dr.output_uid(source.study_instance_uid, source.identity, "v2", dr.SC, "instance")
    assert other_model != first[dr.SC].SOPInstanceUID


def test_objects_go_into_the_source_study_with_provenance_and_a_warning() -> None:
    source = _source()
    objects = dr.build_objects(source, PROVENANCE, _findings(), dr.KINDS)
    assert list(objects) == [dr.SC, dr.SEG, dr.SR, dr.OVERLAY]
    for ds in objects.values():
        assert ds.StudyInstanceUID == source.study_instance_uid
        assert ds.PatientID == "SYNTH-PET"
        assert ds.AccessionNumber == "ACC1"
        assert dr.NOT_FOR_DIAGNOSTIC_USE in ds.SeriesDescription
        equipment = next(  # highdicom adds items of its own and of the source images
            e
            for e in ds.ContributingEquipmentSequence
            if e.get("ManufacturerModelName") == "attention-unet-test"
        )
        assert equipment.Manufacturer == "tumorseg"
        assert equipment.DeviceSerialNumber == "cd" * 32
        assert "cd" * 32 in equipment.ContributionDescription
        assert dr.NOT_FOR_DIAGNOSTIC_USE in equipment.ContributionDescription
    sc = objects[dr.SC]
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert [r.ReferencedSOPInstanceUID for r in sc.SourceImageSequence] == list(
        source.sop_instance_uids
    )
    assert {r.ReferencedSOPClassUID for r in sc.SourceImageSequence} == {PET}
    assert sc.DerivationCodeSequence[0].CodeValue == "113078"  # maximum intensity projection
    assert list(sc.PatientOrientation) == ["L", "F"]
    assert [float(v) for v in sc.PixelSpacing] == [2.0, 2.0]
    assert np.array_equal(sc.pixel_array, _findings().mip)
    overlay = objects[dr.OVERLAY]
    assert overlay.PhotometricInterpretation == "RGB"
    assert overlay.pixel_array.shape == (120, 80, 3)
    assert overlay.pixel_array[25, 45, 0] > overlay.pixel_array[25, 45, 1]  # tinted red


def test_seg_is_binary_neoplasm_on_the_secondary_capture(tmp_path: Path) -> None:
    objects = dr.build_objects(_source(), PROVENANCE, _findings(), dr.KINDS)
    seg = hd.seg.segread(_write(objects[dr.SEG], tmp_path / "seg.dcm"))
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    segment = seg.get_segment_description(1)
    assert segment.segment_label == "Neoplasm"
    assert segment.segmented_property_type.value == "108369006"  # SNOMED CT: Neoplasm
    assert segment.segmented_property_type.scheme_designator == "SCT"
    assert segment.segmented_property_category.value == "49755003"
    algorithm = segment.algorithm_identification[0]
    assert algorithm.AlgorithmVersion == "attention-unet-test"
    assert "cd" * 32 in algorithm.AlgorithmParameters
    sc_uid = objects[dr.SC].SOPInstanceUID
    pixels = seg.get_pixels_by_source_instance([sc_uid], segment_numbers=[1])
    assert np.array_equal(pixels[0, :, :, 0] > 0, _findings().mask)


def test_sr_reports_the_study_and_each_lesion(tmp_path: Path) -> None:
    objects = dr.build_objects(_source(), PROVENANCE, _findings(), dr.KINDS)
    sr = hd.sr.srread(_write(objects[dr.SR], tmp_path / "sr.dcm"))
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    study = sr.content.get_image_measurement_groups()
    assert len(study) == 1
    values = {(m.name.value, m.derivation.value if m.derivation else None): m.value
              for m in study[0].get_measurements()}  # fmt: skip
    assert values[("42798000", None)] == pytest.approx(4.64)  # area, cm2
    assert values[("246206008", None)] == 2  # number of lesions
    assert values[("121206", "56851009")] == pytest.approx(14.2)  # sDmax, cm
    assert values[("126401", "56851009")] == pytest.approx(9.5)  # SUVmax
    lesions = sr.content.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in lesions] == ["Lesion 1", "Lesion 2"]
    first = {(m.name.value, m.derivation.value if m.derivation else None): m.value
             for m in lesions[0].get_measurements()}  # fmt: skip
    assert first == {
        ("42798000", None): pytest.approx(4.0),  # 400 mm2
        ("126401", "56851009"): pytest.approx(9.5),
        ("126401", "373098007"): pytest.approx(6.25),
    }
    region = lesions[0].roi
    assert region is not None
    assert region.value.tolist() == [[40, 20], [50, 20], [50, 30], [40, 30], [40, 20]]


def test_without_suv_the_sr_has_no_suv_rows() -> None:
    findings = _findings()
    no_suv = dr.Findings(
        findings.mip, findings.mask, None, 116, None, 2, None, None,
        tuple(dr.LesionFinding(le.number, le.bbox, le.area_px, None, None, None)
              for le in findings.lesions),
    )  # fmt: skip
    sr = dr.build_objects(_source(), PROVENANCE, no_suv, [dr.SC, dr.SR])[dr.SR]
    text = str(sr)
    assert "SUVbw" not in text
    assert "{pixels}" in text  # areas in pixels without a spacing


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools (dciodvfy) missing")
def test_dciodvfy_finds_no_error_in_any_object(tmp_path: Path) -> None:
    objects = dr.build_objects(_source(), PROVENANCE, _findings(), dr.KINDS)
    iods = {dr.SC: "SCImage", dr.SEG: "Segmentation", dr.SR: "Comprehensive3DSR"}
    for kind, ds in objects.items():
        path = _write(ds, tmp_path / f"{kind}.dcm")
        assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (out.stdout + out.stderr).splitlines()
        assert lines[0] == iods.get(kind, "SCImage")  # the IOD it checked against
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], f"{kind}: {errors}"
