"""``tumorseg archive scan|report`` and ``GET /v1/reports/nightly`` on a real database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from archive.scan import scan_archive
from cli.main import main
from config.settings import Settings, get_settings
from core.dispatch import Dispatcher
from db.models import StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo
from db.session import session_scope
from tests.archive.conftest import unique_png
from tests.conftest import bearer, create_api_key, settings_env


@pytest.fixture
def cli_env(archive_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The archive settings as the CLI process environment."""
    for name, value in settings_env(archive_settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_dry_run_prints_count_and_list_and_submits_nothing(
    archive_settings: Settings,
    archive_root: Path,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("b.png", "a.png"):
        (archive_root / name).write_bytes(unique_png())
    assert main(["archive", "scan", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would submit 2 studies for model ")
    listed = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert listed[0] == ["kind", "content", "hash", "reason", "path"]  # a table with headers
    assert [row[-1] for row in listed[1:]] == ["a.png", "b.png"]
    queued = redis.Redis.from_url(archive_settings.redis_url or "").llen(
        archive_settings.nightly_queue
    )
    assert queued == 0
    assert main(["archive", "scan"]) == 0  # the real scan finds the same two
    out = capsys.readouterr().out
    assert out.startswith("submitted 2 studies as job ")
    with session_scope(archive_settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, int(out.split()[5]))
        assert job is not None
        assert job.name == "archive scan"  # how job lists name it
    assert main(["archive", "scan", "--root", "/"]) == 2  # outside the archive
    assert "not inside a configured archive root" in capsys.readouterr().err


def test_report_lists_the_nights_studies_with_flags(
    archive_settings: Settings,
    archive_root: Path,
    dispatcher: Dispatcher,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("lesion.png", "clean.png", "failed.png"):
        (archive_root / name).write_bytes(unique_png())
    report = scan_archive(archive_settings, dispatcher=dispatcher)
    ids = _study_ids(archive_settings, report.job_id or 0)
    _finish(archive_settings, ids, report.model_version or "")

    today = datetime.now(archive_settings.archive_tzinfo).date().isoformat()
    assert main(["archive", "report", "--date", today, "--format", "csv"]) == 0
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert {"lesion.png", "clean.png", "failed.png"} <= set(rows)
    assert rows["lesion.png"]["flags"] == "lesions"
    assert rows["lesion.png"]["lesions"] == "2"
    assert rows["lesion.png"]["largest_lesion_px"] == "40"
    assert rows["clean.png"]["flags"] == ""
    assert rows["clean.png"]["lesions"] == "0"
    assert rows["failed.png"]["flags"] == "failed"
    assert "worker" in rows["failed.png"]["error"]

    key = create_api_key(archive_settings.sqlalchemy_url, "report-tests")
    with TestClient(create_app(archive_settings), headers=bearer(key)) as client:
        body = client.get("/v1/reports/nightly", params={"date": today}).json()
        by_path = {s["path"]: s for s in body["studies"]}
        assert by_path["lesion.png"]["flags"] == ["lesions"]
        assert by_path["failed.png"]["status"] == "failed"
        assert body["summary"]["with_lesions"] >= 1
        assert body["summary"]["failed"] >= 1
        assert body["summary"]["largest_lesion_px"] >= 40
        jobs = sorted({s["job_id"] for s in body["studies"]})
        assert [t["job_id"] for t in body["tables"]] == jobs
        for table in body["tables"]:  # the links lead to the job's tables
            for kind in ("results_csv", "lesions_csv"):
                linked = client.get(table[kind])
                assert linked.status_code == 200
                assert linked.headers["content-type"].startswith("text/csv")
        empty = client.get("/v1/reports/nightly", params={"date": "2001-01-01"}).json()
        assert empty["studies"] == []
        assert empty["summary"]["studies"] == 0
        assert empty["tables"] == []
        assert client.get("/v1/reports/nightly", params={"date": "soon"}).status_code == 422
        assert client.get("/v1/reports/nightly", headers={"Authorization": ""}).status_code == 401
        other = create_api_key(archive_settings.sqlalchemy_url, "other", tenant="clinic-b")
        assert client.get("/v1/reports/nightly", headers=bearer(other)).status_code == 403
    assert main(["archive", "report", "--date", today, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["date"] == today


def _study_ids(settings: Settings, job_id: int) -> dict[str, int]:
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        return {s.filename: s.id for s in job.studies}


def _finish(settings: Settings, ids: dict[str, int], version: str) -> None:
    """Store outcomes as the worker would (see worker.segmentation._store)."""
    with session_scope(settings.sqlalchemy_url) as session:
        for name, lesions, largest in (("lesion.png", 2, 40), ("clean.png", 0, 0)):
            result = {
                "study_id": ids[name],
                "model_version": version,
                "mask_png": unique_png(),
                "height": 300,
                "width": 400,
                "tumor_pixels": 55 if lesions else 0,
                "lesions": lesions,
                "largest_lesion_px": largest,
            }
            studies_repo.upsert_results(session, [result])
            study = studies_repo.get_study(session, ids[name])
            assert study is not None
            study.status = StudyStatus.SUCCEEDED
        failed = studies_repo.get_study(session, ids["failed.png"])
        assert failed is not None
        failed.status, failed.error = StudyStatus.FAILED, "gave up: the worker died"


def test_report_of_a_day_out_of_range_is_refused_naming_the_range(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "report", "--date", "0001-01-01"]) == 2
    assert "outside 1970-01-01 to 9999-12-30" in capsys.readouterr().err
