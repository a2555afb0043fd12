"""Status changes on both backends, and that db/status.py is the only code that makes them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from db import status
from db.models import JobStatus, Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "archive", "cli", "config", "core", "db", "model", "worker")


def _job(db_url: str, n: int = 3) -> tuple[int, list[int]]:
    with session_scope(db_url) as session:
        job = jobs_repo.create_job(
            session, "q", [jobs_repo.NewStudy(f"s{i}.png", b"png") for i in range(n)]
        )
        return job.id, [s.id for s in job.studies]


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


def _claim(session: Session, ids: list[int]) -> status.Claim:
    return status.claim(
        session,
        ids,
        owner="tests@host:1",
        lease_until=utcnow(),
        model_version="v1",
        model_trained=False,
        max_deliveries=3,
        give_up="gave up",
        held_elsewhere=lambda study, now: False,
    )


def test_cancel_ends_every_study_without_a_result(db_url: str) -> None:
    job_id, ids = _job(db_url, n=4)
    handed: list[tuple[str, object]] = []
    with session_scope(db_url) as session:
        assert [s.id for s in _claim(session, ids[:2]).studies] == ids[:2]
    with session_scope(db_url, handed.extend) as session:
        status.finish(session, {ids[0]: None})  # one done; one still running; two queued
    with session_scope(db_url, handed.extend) as session:
        assert status.cancel_unfinished(session, job_id) == 3  # the running one too
    with session_scope(db_url) as session:
        counts = status.study_counts(session, job_id)
        assert counts[StudyStatus.CANCELLED] == 3
        assert counts[StudyStatus.SUCCEEDED] == 1
        job = jobs_repo.get_job(session, job_id)
        assert job is not None
        assert job.status is JobStatus.SUCCEEDED, "what succeeded is not called cancelled"
        running = status.still_running(session, ids, "tests@host:1")
        assert running == set(), "the worker sees its cancelled studies are no longer its"
    assert handed == [(status.JOB_FINISHED, job_id)]


def test_the_jobs_a_change_finishes_are_handed_on_after_the_commit(db_url: str) -> None:
    job_id, ids = _job(db_url, n=2)
    handed: list[tuple[str, object]] = []
    with session_scope(db_url, handed.extend) as session:
        status.fail_unfinished(session, ids[:1], "first")
    assert handed == []  # one to go
    with session_scope(db_url, handed.extend) as session:
        assert status.fail_unfinished(session, ids, "second") == 1
        assert handed == [], "not before the commit"
    assert handed == [(status.JOB_FINISHED, job_id)]
    with session_scope(db_url, handed.extend) as session:  # finished already
        assert status.fail_unfinished(session, ids, "third") == 0
    assert handed == [(status.JOB_FINISHED, job_id)], "not announced twice"
    with pytest.raises(RuntimeError, match="job_finished"):  # noqa: PT012
        job_id, ids = _job(db_url, n=1)
        with session_scope(db_url) as session:  # nobody would announce it
            status.fail_unfinished(session, ids, "fourth")
    with session_scope(db_url) as session:
        (study,) = jobs_repo.get_job(session, job_id).studies  # type: ignore[union-attr]
        assert study.status is StudyStatus.QUEUED, "the refused unit of work rolled back"


def test_an_interrupted_chunk_is_claimed_one_study_at_a_time(db_url: str) -> None:
    _, ids = _job(db_url, n=3)
    with session_scope(db_url) as session:
        first = _claim(session, ids)
        assert not first.interrupted
        assert len(first.studies) == 3  # the worker dies here, holding all three
    with session_scope(db_url) as session:
        again = _claim(session, ids)
        assert again.interrupted
        assert [s.id for s in again.studies] == ids[:1]
        assert again.skipped == again.failed == []
    with session_scope(db_url) as session:
        attempts = [s.attempts for s in jobs_repo.get_job(session, _job_id(session, ids)).studies]  # type: ignore[union-attr]
        assert attempts == [2, 1, 1], "only the claimed study used up another delivery"


def _job_id(session: Session, ids: list[int]) -> int:
    study = session.get(Study, ids[0])
    assert study is not None
    return study.job_id


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"succeeded": 2}, JobStatus.SUCCEEDED),
        ({"succeeded": 1, "failed": 1}, JobStatus.PARTIALLY_FAILED),
        ({"failed": 2}, JobStatus.FAILED),
        ({"succeeded": 1, "cancelled": 1}, JobStatus.SUCCEEDED),
        ({"succeeded": 1, "failed": 1, "cancelled": 1}, JobStatus.PARTIALLY_FAILED),
        ({"failed": 1, "cancelled": 1}, JobStatus.CANCELLED),
        ({"cancelled": 2}, JobStatus.CANCELLED),
        ({"queued": 1, "succeeded": 1}, JobStatus.QUEUED),
        ({"running": 1}, JobStatus.RUNNING),
    ],
)
def test_job_status_from_counts(counts: dict[str, int], expected: JobStatus) -> None:
    full = {s: counts.get(s.value, 0) for s in StudyStatus}
    assert status.job_status(full, JobStatus.QUEUED) is expected
