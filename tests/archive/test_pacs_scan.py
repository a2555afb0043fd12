"""The DICOMweb archive source against a real Orthanc: what a scan takes, skips, reports,
and never takes twice."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import redis
from PIL import Image
from sqlalchemy import select

from archive.dicomweb import DicomwebArchive
from archive.pacs_source import DICOMWEB, series_identity
from archive.scan import ScanError, scan_archive
from archive.sources import Problem
from archive.suv import decode_quant_mip
from cli.main import main
from config.settings import PacsEndpoint, Settings, get_settings
from core.dispatch import Dispatcher
from db.models import ArchiveEntry, PacsStudy, Study
from db.session import session_scope
from tests.archive.conftest import SPOT_VALUE, expected_spot_pixel, pet_volume
from tests.archive.orthanc import Orthanc
from tests.archive.pet_series import SUV_FACTOR, pet_series, stow, with_tags
from tests.conftest import settings_env

#: The database's part is the archive's own (tests/archive/test_scan.py runs it on both
#: backends): these run on PostgreSQL only, to keep the suite's time.
ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _queued(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        return int(client.llen(settings.nightly_queue))
    finally:
        client.close()


def _reasons(items: list[Problem], series_uid: str) -> list[str]:
    return [p.reason for p in items if series_uid in p.path]


@ON_POSTGRESQL
def test_a_complete_pet_series_is_submitted_once_with_its_suv_factor(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    good = pet_series(pet_volume(seed=1))
    study = good[0].StudyInstanceUID
    not_ac = pet_series(pet_volume(seed=2), with_tags(corrected_image=("DECY",)), study)
    derived = pet_series(pet_volume(seed=3), with_tags(image_type=("DERIVED", "SECONDARY")), study)
    dynamic = pet_series(pet_volume(seed=11), with_tags(series_type=("DYNAMIC", "IMAGE")), study)
    for series in (good, not_ac, derived, dynamic):
        stow(orthanc.dicomweb_url, series)

    first = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert first.job_id is not None
    assert first.submitted == 1
    [planned] = first.planned
    identity = series_identity(good[0].SeriesInstanceUID, [ds.SOPInstanceUID for ds in good])
    assert (planned.kind, planned.content_hash) == (DICOMWEB, identity)
    assert planned.path == f"{study}/{good[0].SeriesInstanceUID}"
    assert _reasons(first.skipped, not_ac[0].SeriesInstanceUID) == [
        "not attenuation corrected (CorrectedImage DECY)"
    ]
    assert _reasons(first.skipped, derived[0].SeriesInstanceUID) == [
        "ImageType DERIVED\\SECONDARY: not an ORIGINAL series"
    ]
    assert _reasons(first.skipped, dynamic[0].SeriesInstanceUID) == [
        "SeriesType DYNAMIC: only static series are taken"
    ]
    assert first.problems == []
    assert _queued(pacs_settings) == 1
    with session_scope(pacs_settings.sqlalchemy_url) as session:
        entry = session.scalars(
            select(ArchiveEntry).join(Study).where(Study.job_id == first.job_id)
        ).one()
        assert (entry.kind, entry.root, entry.content_hash) == (
            DICOMWEB,
            "dicomweb:test-pacs",
            identity,
        )
        origin = session.scalars(select(PacsStudy).where(PacsStudy.study_id == entry.study_id))
        pacs = origin.one()
        assert pacs.study_instance_uid == study
        assert pacs.sop_instance_uids == sorted(ds.SOPInstanceUID for ds in good)
        assert pacs.patient["PatientID"] == "SYNTH-PET"
        assert pacs.units == "BQML"
        assert pacs.suv_factor == pytest.approx(SUV_FACTOR, rel=1e-4)
        assert pacs.suv_note.startswith("SUVbw (QIBA)")
        assert pacs.quant_mip is not None
        assert pacs.quant_mip_slope is not None
        suv = decode_quant_mip(pacs.quant_mip, pacs.quant_mip_slope) * pacs.suv_factor
        assert suv.max() == pytest.approx(SPOT_VALUE, rel=0.02)  # the hot spot's SUV
        png = session.get(Study, entry.study_id)
        assert png is not None
        assert (png.spacing_row_mm, png.spacing_col_mm) == pytest.approx((0.6, 0.6))
        with Image.open(io.BytesIO(png.input_png)) as image:
            row, col = expected_spot_pixel()
            assert image.size == (400, 600)
            assert image.getpixel((int(col), int(row))) == 0  # the spot, rendered black

    second = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert (second.job_id, second.submitted, second.planned) == (None, 0, [])
    assert second.already_done == 1
    assert _queued(pacs_settings) == 1


@ON_POSTGRESQL
def test_a_series_still_arriving_is_taken_only_once_complete(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    series = pet_series(pet_volume(seed=4))
    stow(orthanc.dicomweb_url, series[:50])
    early = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert early.submitted == 0
    assert _reasons(early.skipped, series[0].SeriesInstanceUID) == [
        "still arriving: 50 of 120 instances (NumberOfSlices); a later scan takes it"
    ]
    stow(orthanc.dicomweb_url, series[50:])
    later = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert later.submitted == 1
    assert later.planned[0].pacs is not None
    assert len(later.planned[0].pacs.sop_instance_uids) == 120


@ON_POSTGRESQL
def test_malformed_series_are_reported_and_never_rendered(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    no_count = pet_series(pet_volume(seed=5), with_tags(number_of_slices=None))
    mixed = pet_series(pet_volume(seed=6), rows_of={7: 30})
    no_position = pet_series(pet_volume(seed=7))
    del no_position[3].ImagePositionPatient
    for series in (no_count, mixed, no_position):
        stow(orthanc.dicomweb_url, series)
    report = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert (report.job_id, report.submitted) == (None, 0)
    assert _reasons(report.problems, no_count[0].SeriesInstanceUID) == [
        "malformed series, not rendered: NumberOfSlices (0054,0081) is missing"
    ]
    assert _reasons(report.problems, mixed[0].SeriesInstanceUID) == [
        "malformed series, not rendered: instances of different sizes (30x60, 40x60)"
    ]
    [reason] = _reasons(report.problems, no_position[0].SeriesInstanceUID)
    assert "lacks ['ImagePositionPatient']" in reason
    assert _queued(pacs_settings) == 0


@ON_POSTGRESQL
def test_a_series_without_suv_is_taken_and_says_why(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    admin = pet_series(pet_volume(seed=8), with_tags(decay_correction="ADMIN"))
    stow(orthanc.dicomweb_url, admin)
    dry = scan_archive(pacs_settings, dry_run=True, source="test-pacs")
    assert [p.content_hash for p in dry.planned] == [
        series_identity(admin[0].SeriesInstanceUID, [ds.SOPInstanceUID for ds in admin])
    ]
    assert dry.planned[0].pacs is not None
    assert "ADMIN" in dry.planned[0].pacs.suv.note
    assert _queued(pacs_settings) == 0  # a dry run submits nothing
    real = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert real.submitted == 1
    with session_scope(pacs_settings.sqlalchemy_url) as session:
        study_id = session.scalars(select(Study.id).where(Study.job_id == real.job_id)).one()
        pacs = session.scalars(select(PacsStudy).where(PacsStudy.study_id == study_id)).one()
        assert pacs.suv_factor is None
        assert pacs.suv_note.startswith("no SUV: DecayCorrection ADMIN")


@ON_POSTGRESQL
def test_a_pacs_that_is_down_or_unknown_is_reported_not_raised(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    with pytest.raises(ScanError, match="no PACS endpoint named 'elsewhere'"):
        scan_archive(pacs_settings, dispatcher=dispatcher, source="elsewhere")
    with pytest.raises(ScanError, match="exclude each other"):
        scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs", roots=[Path("/")])
    orthanc.stop()
    report = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert (report.job_id, report.submitted) == (None, 0)
    [problem] = report.problems
    assert problem.path == "dicomweb:test-pacs"
    assert "PACS test-pacs: the study search failed: ConnectionError" in problem.reason


@ON_POSTGRESQL
def test_basic_auth_is_sent_and_a_wrong_password_is_reported(
    pacs_settings: Settings, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    guarded = Orthanc(tmp_path / "guarded", users={"tumorseg": "s3cret-pw"})
    guarded.start()
    try:
        series = pet_series(pet_volume(seed=9))
        stow(guarded.dicomweb_url, series, auth=("tumorseg", "s3cret-pw"))
        good = PacsEndpoint.model_validate(
            {"name": "guarded", "url": guarded.dicomweb_url, "auth": "basic",
             "username": "tumorseg", "password": "s3cret-pw"}
        )  # fmt: skip
        bad = PacsEndpoint.model_validate({**good.model_dump(), "name": "wrong", "password": "x"})
        settings = pacs_settings.model_copy(update={"pacs_endpoints": [good, bad]})
        refused = scan_archive(settings, dry_run=True, source="wrong")
        [problem] = refused.problems
        assert "401" in problem.reason
        found = scan_archive(settings, dry_run=True, source="guarded")
        assert [p.path.split("/")[1] for p in found.planned] == [series[0].SeriesInstanceUID]
    finally:
        guarded.stop(graceful=False)


def test_bearer_tokens_and_tls_settings_reach_the_http_session() -> None:
    endpoint = PacsEndpoint.model_validate(
        {"name": "cloud", "url": "https://pacs.example/dicom-web", "auth": "bearer",
         "token": "tok-123", "verify_tls": False}
    )  # fmt: skip
    archive = DicomwebArchive(endpoint)
    try:
        session = archive._session
        assert session.headers["Authorization"] == "Bearer tok-123"
        assert session.verify is False
        assert session.auth is None
    finally:
        archive.close()


@ON_POSTGRESQL
def test_cli_scans_one_source(
    pacs_settings: Settings,
    orthanc: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    series = pet_series(pet_volume(seed=10))
    stow(orthanc.dicomweb_url, series)
    for name, value in settings_env(pacs_settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert main(["archive", "scan", "--source", "test-pacs", "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("would submit 1 studies for model ")
        assert series[0].SeriesInstanceUID in out
        assert "SUVbw (QIBA)" in out
        assert main(["archive", "scan", "--source", "nowhere"]) == 2
        assert "no PACS endpoint named 'nowhere'" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
