"""Status changes on both backends, and that db/status.py is the only code that makes them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from db import status
from db.models import JobStatus, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "archive", "cli", "config", "core", "db", "model", "worker")


def _job(db_url: str, n: int = 3) -> tuple[int, list[int]]:
    with session_scope(db_url) as session:
        job = jobs_repo.create_job(
            session, "q", [jobs_repo.NewStudy(f"s{i}.png", b"png") for i in range(n)]
        )
        return job.id, jobs_repo.queued_study_ids(session, job.id)


def _status_writes(path: Path) -> list[int]:
    """Lines that assign a ``.status`` attribute or UPDATE a ``status`` column."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            flat = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in flat):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
            and any(k.arg == "status" for k in node.keywords)
        ):
            lines.append(node.lineno)
    return lines


def test_only_db_status_changes_a_study_or_job_status() -> None:
    writers = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _status_writes(path)
    }
    assert writers, "the scan finds nothing: it no longer sees the writes"
    assert {w.split(":")[0] for w in writers} == {"db/status.py"}, sorted(writers)


def test_cancel_only_touches_queued_studies(db_url: str) -> None:
    job_id, ids = _job(db_url)
    with session_scope(db_url) as session:
        first = status.claim(
            session,
            ids[:1],
            owner="tests@host:1",
            lease_until=utcnow(),
            model_version="v1",
            model_trained=False,
            max_deliveries=3,
            give_up="gave up",
            held_elsewhere=lambda study, now: False,
        )
        assert [s.id for s in first.studies] == ids[:1]
    with session_scope(db_url) as session:
        assert status.cancel_queued(session, job_id) == 2
    with session_scope(db_url) as session:
        counts = status.study_counts(session, job_id)
        assert counts[StudyStatus.CANCELLED] == 2
        assert counts[StudyStatus.RUNNING] == 1
        assert jobs_repo.get_job(session, job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_the_jobs_a_change_finishes_are_recorded_in_its_unit_of_work(db_url: str) -> None:
    job_id, ids = _job(db_url, n=2)
    with session_scope(db_url) as session:
        status.fail_unfinished(session, ids[:1], "first")
        assert job_id not in session.info.get(status.FINISHED_JOBS, set())  # one to go
    with session_scope(db_url) as session:
        assert status.fail_unfinished(session, ids, "second") == 1
        assert job_id in session.info[status.FINISHED_JOBS]
    with session_scope(db_url) as session:  # finished already: not announced twice
        assert status.fail_unfinished(session, ids, "third") == 0
        assert job_id not in session.info[status.FINISHED_JOBS]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"succeeded": 2}, JobStatus.SUCCEEDED),
        ({"succeeded": 1, "failed": 1}, JobStatus.PARTIALLY_FAILED),
        ({"failed": 2}, JobStatus.FAILED),
        ({"succeeded": 1, "cancelled": 1}, JobStatus.CANCELLED),
        ({"queued": 1, "succeeded": 1}, JobStatus.QUEUED),
        ({"running": 1}, JobStatus.RUNNING),
    ],
)
def test_job_status_from_counts(counts: dict[str, int], expected: JobStatus) -> None:
    full = {s: counts.get(s.value, 0) for s in StudyStatus}
    assert status.job_status(full, JobStatus.QUEUED) is expected
