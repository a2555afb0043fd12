"""The archive scan on a real database and Redis: new studies once, re-processing, locks."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
import redis
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from archive.lock import SCAN_LOCK_KEY, redis_lock
from archive.scan import scan_archive
from config.settings import Settings
from core.current_model import current_model
from core.dispatch import Dispatcher
from db.models import ArchiveEntry, Job, JobSource, ModelVersion, Study, StudyStatus
from db.repositories import archive as archive_repo
from db.repositories import jobs as jobs_repo
from db.repositories import model_versions as models_repo
from db.repositories import studies as studies_repo
from db.session import session_scope
from tests.archive.conftest import pet_volume, unique_png, write_dicom_series, write_nifti


def _populate(root: Path) -> None:
    (root / "mip.png").write_bytes(unique_png())
    (root / "ward").mkdir()
    write_nifti(root / "ward" / "pet.nii.gz", pet_volume())
    write_dicom_series(root / "ward" / "series", pet_volume())
    (root / "ward" / "corrupt.nii").write_bytes(b"definitely not nifti")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def _queued(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        return int(client.llen(settings.nightly_queue))
    finally:
        client.close()


def test_scan_submits_new_studies_once_and_then_only_what_was_added(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher
) -> None:
    _populate(archive_root)
    first = scan_archive(archive_settings, dispatcher=dispatcher)
    assert first.job_id is not None
    assert first.submitted == 3
    assert sorted(p.kind for p in first.planned) == ["dicom", "nifti", "png"]
    skipped = {Path(p.path).name for p in first.problems}
    assert skipped == {"corrupt.nii", "broken.png"}  # reported, the scan went on
    assert _queued(archive_settings) == 1  # 3 studies, chunk_size 4: one task
    with session_scope(archive_settings.sqlalchemy_url) as session:
        job = session.get(Job, first.job_id)
        assert job is not None
        assert job.source == JobSource.ARCHIVE
        assert job.queue == archive_settings.nightly_queue
        assert len(job.studies) == 3
        entries = session.scalars(
            select(ArchiveEntry).join(Study).where(Study.job_id == first.job_id)
        ).all()
        assert {e.model_version for e in entries} == {first.model_version}
        assert {e.path for e in entries} == {"mip.png", "ward/pet.nii.gz", "ward/series"}

    second = scan_archive(archive_settings, dispatcher=dispatcher)
    assert second.job_id is None
    assert second.submitted == 0
    assert second.planned == []
    assert second.already_done == 3
    assert _queued(archive_settings) == 1

    (archive_root / "ward" / "later.png").write_bytes(unique_png())
    third = scan_archive(archive_settings, dispatcher=dispatcher)
    assert third.submitted == 1
    assert [p.path for p in third.planned] == ["ward/later.png"]
    assert _queued(archive_settings) == 2


def test_unchanged_paths_are_not_read_again_and_changed_ones_are(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher
) -> None:
    (archive_root / "kept.png").write_bytes(unique_png())
    (archive_root / "edited.png").write_bytes(unique_png())
    assert scan_archive(archive_settings, dispatcher=dispatcher).submitted == 2
    kept = archive_root / "kept.png"
    stat = kept.stat()
    kept.write_bytes(b"unreadable garbage")  # would be reported if it were read again
    os.utime(kept, (stat.st_atime, stat.st_mtime))
    (archive_root / "edited.png").write_bytes(unique_png())  # new content, new mtime
    report = scan_archive(archive_settings, dispatcher=dispatcher)
    assert [p.path for p in report.planned] == ["edited.png"]
    assert report.problems == []
    assert report.already_done == 1


def test_the_database_refuses_a_second_entry_of_one_hash_and_version(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher
) -> None:
    (archive_root / "once.png").write_bytes(unique_png())
    report = scan_archive(archive_settings, dispatcher=dispatcher)
    planned = report.planned[0]
    with session_scope(archive_settings.sqlalchemy_url) as session:
        job = jobs_repo.create_job(session, "q", [jobs_repo.NewStudy("again.png", b"")])
        archive_repo.add_entry(
            session, job.studies[0].id, planned.content_hash, report.model_version or "",
            "png", "/", "x",
        )  # fmt: skip
        with pytest.raises(IntegrityError):  # the same content twice for one version
            session.flush()
        session.rollback()


def test_reprocess_model_requeues_old_results_with_the_promoted_model(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    _populate(archive_root)
    first = scan_archive(archive_settings, dispatcher=dispatcher)
    old = f"attention-unet-old-{secrets.token_hex(4)}"  # what segmented them back then
    with session_scope(archive_settings.sqlalchemy_url) as session:
        for study in session.scalars(select(Study).where(Study.job_id == first.job_id)):
            # what a worker of the old model stored (see worker.segmentation)
            studies_repo.upsert_results(session, [_result(study.id, old)])
            study.status = StudyStatus.SUCCEEDED
    new = _promote_tiny_artifact(archive_settings, tmp_path)
    try:
        plain = scan_archive(archive_settings, dispatcher=dispatcher)
        assert plain.model_version == new
        assert plain.submitted == 0
        again = scan_archive(archive_settings, dispatcher=dispatcher, reprocess_model=old)
        assert again.submitted == 3
        assert again.model_version == new
        assert {p.reason for p in again.planned} == {f"reprocess {old}"}
        with session_scope(archive_settings.sqlalchemy_url) as session:
            job = session.get(Job, again.job_id)
            assert job is not None
            assert job.source == JobSource.ARCHIVE
            assert {s.status for s in job.studies} == {StudyStatus.QUEUED}
            olds = {e.content_hash: e.study_id for e in _entries(session, first.job_id)}
            for entry in _entries(session, again.job_id):
                assert entry.model_version == new
                same = archive_repo.study_input(session, olds[entry.content_hash])
                assert same is not None
                assert archive_repo.study_input(session, entry.study_id) == same
        once_more = scan_archive(archive_settings, dispatcher=dispatcher, reprocess_model=old)
        assert once_more.submitted == 0  # never twice for the current model
    finally:
        with session_scope(archive_settings.sqlalchemy_url) as session:
            session.execute(update(ModelVersion).values(promoted=False))
            session.execute(delete(ModelVersion).where(ModelVersion.version == new))


def test_dry_run_submits_nothing(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher
) -> None:
    _populate(archive_root)
    report = scan_archive(archive_settings, dry_run=True)
    assert len(report.planned) == 3
    assert report.job_id is None
    assert report.submitted == 0
    assert {Path(p.path).name for p in report.problems} == {"corrupt.nii", "broken.png"}
    assert _queued(archive_settings) == 0
    with session_scope(archive_settings.sqlalchemy_url) as session:
        hashes = [p.content_hash for p in report.planned]
        assert archive_repo.known_hashes(session, hashes) == set()


def test_a_held_lock_makes_a_second_scan_do_nothing(
    archive_settings: Settings, archive_root: Path, dispatcher: Dispatcher
) -> None:
    (archive_root / "locked.png").write_bytes(unique_png())
    url = archive_settings.redis_url or ""
    with redis_lock(url, SCAN_LOCK_KEY, 60) as held:
        assert held
        with redis_lock(url, SCAN_LOCK_KEY, 60) as other:
            assert not other  # SET NX: a second beat's scan cannot take it
        report = scan_archive(archive_settings, dispatcher=dispatcher)
        assert report.locked
        assert report.job_id is None
        assert _queued(archive_settings) == 0
    assert scan_archive(archive_settings, dispatcher=dispatcher).submitted == 1  # released


def _entries(session: object, job_id: int | None) -> list[ArchiveEntry]:
    stmt = select(ArchiveEntry).join(Study).where(Study.job_id == job_id)
    return list(session.scalars(stmt))  # type: ignore[attr-defined]


def _result(study_id: int, version: str) -> dict[str, object]:
    return {
        "study_id": study_id,
        "model_version": version,
        "mask_png": unique_png(),
        "height": 300,
        "width": 400,
        "tumor_pixels": 0,
        "lesions": 0,
        "largest_lesion_px": 0,
    }


def _promote_tiny_artifact(settings: Settings, parent: Path) -> str:
    from model.artifact import save_artifact
    from model.manifest import Manifest
    from model.network import build_network

    architecture = {
        "name": "AttentionUnet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [4, 8],
        "strides": [2],
        "dropout": 0.0,
    }
    manifest = Manifest(version="", trained=False, architecture=architecture)
    directory = save_artifact(build_network(architecture), manifest, parent)
    version = json.loads((directory / "manifest.json").read_text())["version"]
    with session_scope(settings.sqlalchemy_url) as session:
        models_repo.register(session, version, str(directory), {}, trained=False)
        models_repo.promote(session, version)
        assert current_model(session, settings).version == version
    return version
