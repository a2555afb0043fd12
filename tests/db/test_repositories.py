"""Repositories on both backends: job creation, result upsert, the job views' queries."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db import status
from db.models import JobStatus, Result, StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import model_versions as models_repo
from db.repositories import studies as studies_repo
from db.session import session_scope
from tests.conftest import queued_study_ids


def _job(
    db_url: str, n: int = 3, bad: int = 0, handed: list[tuple[str, object]] | None = None
) -> int:
    studies = [jobs_repo.NewStudy(f"s{i}.png", b"png") for i in range(n)]
    studies += [jobs_repo.NewStudy(f"bad{i}.png", b"x", error="not a PNG") for i in range(bad)]
    with session_scope(db_url, handed.extend if handed is not None else None) as session:
        return jobs_repo.create_job(session, "q", studies).id


def _result(study_id: int, version: str, dice: float | None) -> dict[str, object]:
    return {
        "study_id": study_id, "model_version": version, "mask_png": b"m",
        "height": 4, "width": 4, "tumor_pixels": 3, "tumor_fraction": 0.1, "lesions": 1,
        "largest_lesion_px": 3, "uptake_mean": 0.5, "uptake_max": 0.9, "dice": dice,
        "precision": None, "recall": None, "inference_seconds": 0.1,
    }  # fmt: skip


def test_create_job_stores_studies_in_order_and_fails_bad_ones(db_url: str) -> None:
    job_id = _job(db_url, n=3, bad=1)
    with session_scope(db_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.QUEUED
        assert [s.filename for s in job.studies] == ["s0.png", "s1.png", "s2.png", "bad0.png"]
        counts = status.study_counts(session, job_id)
        assert counts[StudyStatus.QUEUED] == 3
        assert counts[StudyStatus.FAILED] == 1
        assert len(queued_study_ids(session, job_id)) == 3


def test_job_of_only_bad_studies_is_failed_at_once(db_url: str) -> None:
    handed: list[tuple[str, object]] = []
    job_id = _job(db_url, n=0, bad=2, handed=handed)
    with session_scope(db_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.FAILED
        assert job.finished_at is not None
    assert handed == [("job_finished", job_id)], "its end is announced after the commit"


def test_result_upsert_is_idempotent_per_study_and_model_version(db_url: str) -> None:
    job_id = _job(db_url, n=1)
    with session_scope(db_url) as session:
        study_id = queued_study_ids(session, job_id)[0]
        studies_repo.upsert_results(session, [_result(study_id, "v1", 0.5)])
    with session_scope(db_url) as session:  # a redelivered chunk writes the same key again
        studies_repo.upsert_results(session, [_result(study_id, "v1", 0.75)])
        studies_repo.upsert_results(session, [_result(study_id, "v2", 0.25)])
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Result.model_version, Result.dice).where(Result.study_id == study_id)
        ).all()
        assert sorted(rows) == [("v1", 0.75), ("v2", 0.25)]
        assert session.scalar(select(func.count()).select_from(Result).where(
            Result.study_id == study_id, Result.model_version == "v1")) == 1  # fmt: skip


def test_results_upserted_in_one_call_insert_update_and_keep_their_own_values(
    db_url: str,
) -> None:
    """A chunk's results in one call: new rows, a row of the same key updated, and rows
    whose columns differ (no dice for a study without a label) each keep their values."""
    job_id = _job(db_url, n=3)
    with session_scope(db_url) as session:
        a, b, c = queued_study_ids(session, job_id)
        studies_repo.upsert_results(session, [_result(a, "v1", 0.5)])
    no_dice = {k: v for k, v in _result(c, "v1", None).items() if k != "dice"}
    with session_scope(db_url) as session:
        studies_repo.upsert_results(
            session, [_result(a, "v1", 0.75), _result(b, "v1", 0.25), no_dice]
        )
        studies_repo.upsert_results(session, [])
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Result.study_id, Result.dice, Result.created_at).where(
                Result.study_id.in_([a, b, c]), Result.model_version == "v1"
            )
        ).all()
        assert sorted((r[0], r[1]) for r in rows) == [(a, 0.75), (b, 0.25), (c, None)]
        assert all(r[2] is not None for r in rows)


def test_session_scope_rolls_back_on_error(db_url: str) -> None:
    created: list[int] = []

    def fail_after_creating() -> None:
        with session_scope(db_url) as session:
            created.append(jobs_repo.create_job(session, "q", [jobs_repo.NewStudy("x", b"")]).id)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_after_creating()
    job_id = created[0]
    with session_scope(db_url) as session:
        assert jobs_repo.get_job(session, job_id) is None


def test_dice_summary_averages_labelled_studies(db_url: str) -> None:
    job_id = _job(db_url, n=3)
    with session_scope(db_url) as session:
        ids = queued_study_ids(session, job_id)
        for study_id, dice in zip(ids, (0.2, 0.6, None), strict=True):
            studies_repo.upsert_results(session, [_result(study_id, "v1", dice)])
        for study in jobs_repo.get_job(session, job_id).studies:  # type: ignore[union-attr]
            study.status = StudyStatus.SUCCEEDED
    with session_scope(db_url) as session:
        labelled, mean = jobs_repo.dice_summary(session, job_id)
        assert labelled == 2
        assert mean == pytest.approx(0.4)


def test_promote_keeps_exactly_one_promoted_version(db_url: str) -> None:
    with session_scope(db_url) as session:
        models_repo.register(session, "test-a", "/tmp/a", {"version": "test-a"}, trained=False)
        models_repo.register(session, "test-b", "/tmp/b", {"version": "test-b"}, trained=True)
        models_repo.promote(session, "test-a")
        models_repo.promote(session, "test-b")
        promoted = models_repo.get_promoted(session)
        assert promoted is not None
        assert promoted.version == "test-b"
        assert promoted.trained
        assert [v.version for v in models_repo.list_versions(session) if v.promoted] == ["test-b"]
        with pytest.raises(LookupError):
            models_repo.promote(session, "missing")
        session.rollback()  # leave no promotion behind for other tests
    with session_scope(db_url) as session:
        assert models_repo.get_promoted(session) is None
