"""The chunk logic on real databases with the real (bundled) model."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from config.settings import Settings
from core.current_model import CurrentModel
from db import status
from db.models import JobStatus, Result, StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import model_versions as models_repo
from db.session import session_scope
from model.manifest import released_artifact_dir
from model.png import ImageLimits, validate_png
from tests.conftest import patient_files, png_bytes
from worker.predictor_cache import PredictorCache
from worker.segmentation import SegmentationService


@pytest.fixture(scope="session")
def predictor_cache() -> PredictorCache:
    """One predictor for all worker tests (loading costs seconds)."""
    return PredictorCache(device="cpu", batch_size=4, members=1)


@pytest.fixture
def service(settings: Settings, predictor_cache: PredictorCache) -> SegmentationService:
    return SegmentationService(settings, predictor_cache)


def _make_job(db_url: str, studies: list[jobs_repo.NewStudy]) -> tuple[int, list[int]]:
    with session_scope(db_url) as session:
        job = jobs_repo.create_job(session, "test", studies)
        return job.id, [s.id for s in job.studies]


def _labelled(n: int) -> list[jobs_repo.NewStudy]:
    return [
        jobs_repo.NewStudy(img.name, img.read_bytes(), label.name, label.read_bytes())
        for img, label in patient_files(n)
    ]


def _result_count(db_url: str, study_ids: list[int]) -> int:
    with session_scope(db_url) as session:
        stmt = select(func.count()).select_from(Result).where(Result.study_id.in_(study_ids))
        return int(session.scalar(stmt) or 0)


def test_chunk_segments_studies_and_stores_competition_masks(
    service: SegmentationService, settings: Settings
) -> None:
    job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(2))
    report = service.run_chunk(ids)
    assert sorted(report.succeeded) == ids
    assert not report.failed
    phases = report.as_dict()["phases"]
    assert set(phases) == {"claim", "decode", "predict", "findings", "store"}
    assert phases["predict"] > 0
    assert sum(phases.values()) <= report.seconds + 0.01
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.SUCCEEDED
        assert job.model_version == report.model_version
        assert job.model_trained is not None
        assert job.started_at is not None
        assert job.finished_at is not None
        for study in job.studies:
            result = study.results[0]
            mask = np.asarray(Image.open(io.BytesIO(result.mask_png)))
            source = Image.open(io.BytesIO(study.input_png))
            assert mask.shape == (source.height, source.width)
            assert set(np.unique(mask).tolist()) <= {0, 255}
            assert result.tumor_pixels == int((mask == 255).sum())
            assert result.dice is not None
            assert 0.0 <= result.dice <= 1.0


def test_redelivered_chunk_writes_one_result_row(
    service: SegmentationService, settings: Settings
) -> None:
    _job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(1))
    service.run_chunk(ids)
    second = service.run_chunk(ids)  # redelivery after success: skipped
    assert second.skipped == ids
    assert not second.succeeded
    assert _result_count(settings.sqlalchemy_url, ids) == 1

    with session_scope(settings.sqlalchemy_url) as session:  # redelivery mid-flight
        for study in jobs_repo.get_job(session, _job_id).studies:  # type: ignore[union-attr]
            study.status = StudyStatus.RUNNING
    third = service.run_chunk(ids)
    assert third.succeeded == ids
    assert _result_count(settings.sqlalchemy_url, ids) == 1  # upserted, not duplicated


def _errors_of_partly_failed_chunk(
    service: SegmentationService,
    settings: Settings,
    studies: list[jobs_repo.NewStudy],
    failed: int,
) -> dict[str, str | None]:
    """Run the studies as one chunk of a new job; check that exactly `failed` of them
    failed and the job is partially failed; return each file's error."""
    job_id, ids = _make_job(settings.sqlalchemy_url, studies)
    report = service.run_chunk(ids)
    assert len(report.failed) == failed
    assert len(report.succeeded) == len(studies) - failed
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.PARTIALLY_FAILED
        return {s.filename: s.error for s in job.studies}


def test_bad_study_fails_alone_and_the_rest_of_the_chunk_goes_on(
    service: SegmentationService, settings: Settings
) -> None:
    good = _labelled(2)
    truncated = jobs_repo.NewStudy("truncated.png", good[0].input_png[:5000])
    wrong_label = jobs_repo.NewStudy(
        "wrong_label.png", good[1].input_png, "tiny.png", png_bytes(np.zeros((20, 20), np.uint8))
    )
    errors = _errors_of_partly_failed_chunk(
        service, settings, [good[0], truncated, wrong_label, good[1]], failed=2
    )
    assert "truncated" in (errors["truncated.png"] or "")
    assert "label" in (errors["wrong_label.png"] or "")
    assert errors[good[0].filename] is None


def _garbage_idat(png: bytes) -> bytes:
    """The same PNG with its image data replaced by bytes that do not inflate, every chunk
    CRC recomputed: it passes the upload check (which walks chunks and CRCs only)."""
    out, pos = bytearray(png[:8]), 8
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            data = bytes(range(256)) * (len(data) // 256) + bytes(len(data) % 256)
        out += struct.pack(">I", len(data)) + kind + data
        out += struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        pos += 12 + length
    return bytes(out)


def test_study_that_passes_the_upload_check_but_does_not_inflate_fails_alone(
    service: SegmentationService, settings: Settings
) -> None:
    good = _labelled(1)
    broken = _garbage_idat(good[0].input_png)
    validate_png(broken, "broken.png", ImageLimits())  # what the API and the archive accept
    errors = _errors_of_partly_failed_chunk(
        service, settings, [jobs_repo.NewStudy("broken.png", broken), good[0]], failed=1
    )
    assert "broken.png: image is a corrupt or truncated PNG" in (errors["broken.png"] or "")
    assert errors[good[0].filename] is None


def test_cancelled_studies_are_skipped(service: SegmentationService, settings: Settings) -> None:
    job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(2))
    with session_scope(settings.sqlalchemy_url, service.dispatcher.after_commit) as session:
        assert status.cancel_unfinished(session, job_id) == 2
    report = service.run_chunk(ids)
    assert sorted(report.skipped) == ids
    assert _result_count(settings.sqlalchemy_url, ids) == 0
    with session_scope(settings.sqlalchemy_url) as session:
        assert jobs_repo.get_job(session, job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_study_past_the_delivery_cap_is_failed(
    service: SegmentationService, settings: Settings
) -> None:
    job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(1))
    with session_scope(settings.sqlalchemy_url) as session:
        study = jobs_repo.get_job(session, job_id).studies[0]  # type: ignore[union-attr]
        study.status, study.attempts = StudyStatus.RUNNING, settings.max_deliveries
    report = service.run_chunk(ids)
    assert report.failed == ids
    with session_scope(settings.sqlalchemy_url) as session:
        study = jobs_repo.get_job(session, job_id).studies[0]  # type: ignore[union-attr]
        assert study.status is StudyStatus.FAILED
        assert "gave up" in (study.error or "")


def test_fail_unfinished_leaves_no_job_waiting(
    service: SegmentationService, settings: Settings
) -> None:
    job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(2))
    assert service.fail_unfinished(ids, "timed out") == 2
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.FAILED
        assert {s.error for s in job.studies} == {"timed out"}


def test_worker_follows_the_promoted_model_version(
    service: SegmentationService, settings: Settings, predictor_cache: PredictorCache
) -> None:
    default = service.current_predictor()
    assert service.current_predictor() is default  # cached between tasks
    artifact = released_artifact_dir()
    with session_scope(settings.sqlalchemy_url) as session:
        models_repo.register(session, "promoted-copy", str(artifact), {}, trained=False)
        models_repo.promote(session, "promoted-copy")
    try:
        promoted = service.current_predictor()
        assert promoted is not default  # reloaded because the promotion changed
        assert predictor_cache.get(CurrentModel(artifact, "promoted-copy", True)) is promoted
    finally:
        with session_scope(settings.sqlalchemy_url) as session:
            row = models_repo.get_version(session, "promoted-copy")
            assert row is not None
            row.promoted = False


def test_interrupted_chunk_goes_one_study_at_a_time_and_the_culprit_fails_alone(
    service: SegmentationService, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A delivery died holding all four (claimed, never stored); one of them has used up
    # its deliveries. Claimed together again, all four would be charged a delivery.
    _job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(4))
    with session_scope(settings.sqlalchemy_url) as session:
        for study in jobs_repo.get_job(session, _job_id).studies:  # type: ignore[union-attr]
            study.status, study.attempts = StudyStatus.RUNNING, 1
            if study.id == ids[1]:
                study.attempts = settings.max_deliveries
    with caplog.at_level("INFO", logger="worker.segmentation"):
        report = service.run_chunk(ids)
    claims = [r.args[0] for r in caplog.records if r.msg == "chunk claimed %s"]
    # the culprit is failed by the claim that takes the next study
    assert claims == [[ids[0]], [ids[2]], [ids[3]]]
    assert report.failed == [ids[1]]
    assert sorted(report.succeeded) == [ids[0], ids[2], ids[3]]
    assert set(report.phases) == {"claim", "decode", "predict", "findings", "store"}
    with session_scope(settings.sqlalchemy_url) as session:
        attempts = {s.id: s.attempts for s in jobs_repo.get_job(session, _job_id).studies}  # type: ignore[union-attr]
    assert attempts == {ids[0]: 2, ids[1]: settings.max_deliveries, ids[2]: 2, ids[3]: 2}

    caplog.clear()
    _job_id, fresh = _make_job(settings.sqlalchemy_url, _labelled(2))  # a first delivery
    with caplog.at_level("INFO", logger="worker.segmentation"):
        service.run_chunk(fresh)
    assert [r.args[0] for r in caplog.records if r.msg == "chunk claimed %s"] == [fresh]


def _expected_lesions(mask: np.ndarray, image: np.ndarray) -> list[dict[str, object]]:
    """Each 8-connected component of the stored mask measured by hand, largest first."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    found = []
    for k in range(1, n + 1):
        pixels = np.argwhere(labels == k)
        values = image[labels == k]
        found.append(
            {
                "area_px": len(pixels),
                "centroid": pixels.mean(axis=0),
                "bbox": (*pixels.min(axis=0), *(pixels.max(axis=0) + 1)),
                "peak_uptake": float(values.max()),
                "mean_uptake": float(values.mean()),
            }
        )
    return sorted(found, key=lambda f: (-f["area_px"], f["centroid"][0], f["centroid"][1]))  # type: ignore[index, operator]


def test_lesion_rows_and_biomarkers_match_the_stored_mask(
    service: SegmentationService, settings: Settings
) -> None:
    from db.models import Lesion
    from model.preprocessing import decode_image

    spacing = (2.0, 4.0)  # mm, unequal so that rows and columns cannot be swapped unseen
    studies = _labelled(3)
    studies[0] = jobs_repo.NewStudy(studies[0].filename, studies[0].input_png, spacing_mm=spacing)
    _job_id, ids = _make_job(settings.sqlalchemy_url, studies)
    assert sorted(service.run_chunk(ids).succeeded) == ids
    with session_scope(settings.sqlalchemy_url) as session:
        threshold = service.current_predictor().rule.threshold
        total_lesions = 0
        for position, study_id in enumerate(ids):
            result = session.scalars(select(Result).where(Result.study_id == study_id)).one()
            rows = session.scalars(
                select(Lesion).where(Lesion.study_id == study_id).order_by(Lesion.number)
            ).all()
            image = decode_image(studies[position].input_png)
            mask = np.asarray(Image.open(io.BytesIO(result.mask_png))) == 255
            expected = _expected_lesions(mask, image)
            total_lesions += len(rows)
            assert [r.number for r in rows] == list(range(1, len(expected) + 1))
            assert result.lesions == len(rows)
            for row, want in zip(rows, expected, strict=True):
                assert row.model_version == result.model_version
                assert row.area_px == want["area_px"]
                assert (row.centroid_row, row.centroid_col) == pytest.approx(
                    tuple(want["centroid"])  # type: ignore[arg-type]
                )
                box = (row.bbox_row0, row.bbox_col0, row.bbox_row1, row.bbox_col1)
                assert box == want["bbox"]
                assert row.peak_uptake == pytest.approx(want["peak_uptake"])
                assert row.mean_uptake == pytest.approx(want["mean_uptake"])
                assert row.peak_probability is not None
                assert threshold - 1 / 255 <= row.peak_probability <= 1.0
                assert row.relative_height is not None
                assert 0.0 <= row.relative_height <= 1.0
            centres = np.array([[r.centroid_row, r.centroid_col] for r in rows]).reshape(-1, 2)
            sdmax = max((float(np.hypot(*(a - b))) for a in centres for b in centres), default=0.0)
            assert result.tumor_pixels == sum(r.area_px for r in rows)
            assert result.sdmax_px == pytest.approx(sdmax)
            assert result.body_height_px is not None
            assert 0 < result.body_height_px <= image.shape[0]
            if position == 0:  # the study with a spacing: areas and distances in mm and cm
                mm = centres * np.array(spacing)
                sdmax_mm = max((float(np.hypot(*(a - b))) for a in mm for b in mm), default=0.0)
                assert [r.area_mm2 for r in rows] == pytest.approx([r.area_px * 8.0 for r in rows])
                assert result.tumor_area_cm2 == pytest.approx(result.tumor_pixels * 8.0 / 100)
                assert result.sdmax_cm == pytest.approx(sdmax_mm / 10)
                assert result.sdmax_per_height == pytest.approx(
                    sdmax_mm / (result.body_height_px * 2.0)
                )
                assert result.body_height_cm == pytest.approx(result.body_height_px * 0.2)
                assert result.body_width_cm == pytest.approx(result.body_width_px * 0.4)  # type: ignore[operator]
            else:
                assert all(r.area_mm2 is None for r in rows)
                assert result.tumor_area_cm2 is None
                assert result.sdmax_cm is None
                assert result.sdmax_per_height == pytest.approx(sdmax / result.body_height_px)
        assert total_lesions > 0  # the samples' patients have predicted lesions

    with session_scope(settings.sqlalchemy_url) as session:  # redelivery mid-flight
        for study in jobs_repo.get_job(session, _job_id).studies:  # type: ignore[union-attr]
            study.status = StudyStatus.RUNNING
    assert sorted(service.run_chunk(ids).succeeded) == ids
    with session_scope(settings.sqlalchemy_url) as session:
        count = session.scalar(
            select(func.count()).select_from(Lesion).where(Lesion.study_id.in_(ids))
        )
        assert count == total_lesions  # replaced, not doubled


class _CancelAfterFirstBatch(SegmentationService):
    """Cancels the job (as ``DELETE /v1/jobs/{id}`` does) once the chunk's first batch is
    stored, and records each store's counts."""

    job_id = 0
    counts: list[dict[StudyStatus, int]]

    def _store(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        still = super()._store(*args, **kwargs)
        url = self.settings.sqlalchemy_url
        with session_scope(url, self.dispatcher.after_commit) as session:
            self.counts.append(status.study_counts(session, self.job_id))
            if len(self.counts) == 1:
                status.cancel_unfinished(session, self.job_id)
        return still


def test_progress_moves_per_batch_and_a_cancel_stops_the_rest_of_a_running_chunk(
    settings: Settings,
) -> None:
    one_by_one = PredictorCache(device="cpu", batch_size=1, members=1)
    service = _CancelAfterFirstBatch(settings, one_by_one)
    service.counts = []
    job_id, ids = _make_job(settings.sqlalchemy_url, _labelled(4))
    service.job_id = job_id
    report = service.run_chunk(ids)
    first = service.counts[0]
    assert first[StudyStatus.SUCCEEDED] == 1, "the first batch's study is done before the rest"
    assert first[StudyStatus.RUNNING] == 3
    assert len(report.succeeded) == 1
    # the batch already running when the cancel came is computed and not stored; the two
    # after it are left out
    assert len(report.skipped) == 1
    assert len(report.dropped) == 2
    assert sorted(report.dropped + report.skipped) == sorted(set(ids) - set(report.succeeded))
    assert _result_count(settings.sqlalchemy_url, ids) == 1, "no result for a cancelled study"
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.SUCCEEDED, "not 'cancelled' over a finished study"
        counts = status.study_counts(session, job_id)
        assert (counts[StudyStatus.SUCCEEDED], counts[StudyStatus.CANCELLED]) == (1, 3)


def test_a_chunk_runs_a_fixed_number_of_statements_whatever_its_size(
    service: SegmentationService, settings: Settings
) -> None:
    from sqlalchemy import event

    from db.session import get_engine

    def statements(n: int) -> int:
        _, ids = _make_job(settings.sqlalchemy_url, _labelled(n))
        seen: list[str] = []

        def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            seen.append(statement)

        engine = get_engine(settings.sqlalchemy_url)
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert len(service.run_chunk(ids).succeeded) == n
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    statements(1)  # the predictor is loaded (and its model row read) once, before counting
    two, four = statements(2), statements(4)  # one batch each (batch size 4)
    assert two == four, "no statement per study"
    assert four <= 30, four


def test_a_study_that_is_no_mip_pet_is_rejected_with_the_reason_and_not_segmented(
    settings: Settings, predictor_cache: PredictorCache
) -> None:
    label = np.zeros((300, 400), np.uint8)
    label[100:140, 180:230] = 255  # a label mask submitted as a study
    studies = [*_labelled(1), jobs_repo.NewStudy("segmentation_000.png", png_bytes(label))]
    job_id, ids = _make_job(settings.sqlalchemy_url, studies)
    report = SegmentationService(settings, predictor_cache).run_chunk(ids)
    assert report.rejected == [ids[1]]
    assert report.succeeded == [ids[0]]
    assert _result_count(settings.sqlalchemy_url, [ids[1]]) == 0
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.PARTIALLY_FAILED
        rejected = job.studies[1]
        assert rejected.status is StudyStatus.REJECTED
        assert "segmentation_000.png: not a MIP-PET image" in (rejected.error or "")
    # the check is a setting: off, the same file is segmented
    _, again = _make_job(settings.sqlalchemy_url, studies[1:])
    unchecked = settings.model_copy(update={"input_check": False})
    assert SegmentationService(unchecked, predictor_cache).run_chunk(again).succeeded == again
