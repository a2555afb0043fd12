"""The reaper re-sends studies whose task was lost; the delivery cap still ends poison chunks."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import timedelta

import redis
from sqlalchemy import func, select

from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Job, Result, Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope
from tests.conftest import REPO_ROOT, patient_files, queued_study_ids, settings_env
from worker.reaper import reap
from worker.segmentation import SegmentationService

QUEUE = "tumorseg.test.reaper"


def _job(settings: Settings, n: int) -> tuple[int, list[int]]:
    studies = [jobs_repo.NewStudy(img.name, img.read_bytes()) for img, _ in patient_files(n)]
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.create_job(session, QUEUE, studies)
        return job.id, queued_study_ids(session, job.id)


def _die_after_claim(settings: Settings, ids: list[int], lease_left_s: float) -> None:
    """Leave the rows as a worker that claimed them and was SIGKILLed leaves them, its
    leases lapsing in ``lease_left_s`` seconds (lapsed already when negative)."""
    with session_scope(settings.sqlalchemy_url) as session:
        for study in session.scalars(select(Study).where(Study.id.in_(ids))):
            study.status, study.attempts = StudyStatus.RUNNING, study.attempts + 1
            study.started_at = utcnow() - timedelta(minutes=5)
            study.lease_owner = "dead@elsewhere:1"
            study.lease_expires_at = utcnow() + timedelta(seconds=lease_left_s)


def _sent_chunks(broker: redis.Redis) -> list[list[int]]:
    """Study ids of every task message waiting in the test queue, oldest first."""
    chunks = []
    for raw in reversed(broker.lrange(QUEUE, 0, -1)):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        chunks.append(body[0][0])
    return chunks


def _statuses(settings: Settings, ids: list[int]) -> dict[int, StudyStatus]:
    with session_scope(settings.sqlalchemy_url) as session:
        return dict(session.execute(select(Study.id, Study.status).where(Study.id.in_(ids))).all())


def test_studies_stuck_running_are_requeued_and_sent_then_finish_once(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher, service: SegmentationService
) -> None:
    _job_id, ids = _job(settings, 6)
    stuck, fresh = ids[:5], ids[5:]
    _die_after_claim(settings, stuck, lease_left_s=-60)  # the lease lapsed: the worker died
    _die_after_claim(settings, fresh, lease_left_s=600)  # may still be running: left alone

    report = reap(settings, dispatcher)

    mine = set(ids)  # the session database may hold other tests' rows
    assert [i for i in report.requeued_running if i in mine] == stuck
    assert not mine & set(report.resent_queued)
    assert _sent_chunks(broker) == [stuck[:4], stuck[4:]]  # chunk_size=4, after the commit
    statuses = _statuses(settings, ids)
    assert all(statuses[i] is StudyStatus.QUEUED for i in stuck)
    assert statuses[fresh[0]] is StudyStatus.RUNNING
    assert not mine & set(reap(settings, dispatcher).requeued_running)  # nothing stuck any more

    for chunk in _sent_chunks(broker):  # what a worker does with the re-sent tasks
        assert sorted(service.run_chunk(chunk).succeeded) == chunk
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalar(
            select(func.count()).select_from(Result).where(Result.study_id.in_(stuck))
        )
        attempts = set(session.scalars(select(Study.attempts).where(Study.id.in_(stuck))))
    assert rows == len(stuck)
    assert attempts == {2}


def test_queued_studies_of_an_idle_job_are_sent_again(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher
) -> None:
    # the API committed the job and died before the enqueue: no message exists
    job_id, ids = _job(settings, 3)
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.updated_at = utcnow() - timedelta(seconds=settings.reap_queued_after + 60)

    report = reap(settings, dispatcher)

    assert [i for i in report.resent_queued if i in ids] == ids
    assert _sent_chunks(broker) == [ids]
    assert _sent_chunks(broker) == [ids]
    assert not set(ids) & set(reap(settings, dispatcher).resent_queued)
    disabled = settings.model_copy(update={"reap_queued_after": 0})
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.updated_at = utcnow() - timedelta(days=30)
    assert not set(ids) & set(reap(disabled, dispatcher).resent_queued)
    assert _sent_chunks(broker) == [ids]  # still only the one re-send


def test_a_chunk_that_kills_every_worker_is_failed_after_max_deliveries(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher, service: SegmentationService
) -> None:
    job_id, ids = _job(settings, 2)
    for _ in range(settings.max_deliveries):  # each delivery claims, then the worker dies
        _die_after_claim(settings, ids, lease_left_s=-60)
        assert [i for i in reap(settings, dispatcher).requeued_running if i in ids] == ids
    report = service.run_chunk(ids)  # the next delivery gives up instead of looping

    assert sorted(report.failed) == ids
    assert not report.succeeded
    with session_scope(settings.sqlalchemy_url) as session:
        studies = session.scalars(select(Study).where(Study.id.in_(ids))).all()
        errors = {s.error for s in studies}
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status.value == "failed"
    assert all(e and f"gave up after {settings.max_deliveries} deliveries" in e for e in errors), (
        errors
    )
    assert not set(ids) & set(reap(settings, dispatcher).requeued_running)  # failed for good


def test_reap_command_requeues_and_prints_its_report(
    settings: Settings, broker: redis.Redis
) -> None:
    _job_id, ids = _job(settings, 2)
    _die_after_claim(settings, ids, lease_left_s=-60)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "reap"],
        cwd=REPO_ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(ids) <= set(report["requeued_running"])
    assert report["tasks_sent"] >= 1
    assert _sent_chunks(broker) == [ids]
    assert set(_statuses(settings, ids).values()) == {StudyStatus.QUEUED}


def test_idle_queued_studies_wait_while_their_queue_still_drains(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher
) -> None:
    depth = dispatcher.queue_depth
    job_id, ids = _job(settings, 2)
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.updated_at = utcnow() - timedelta(seconds=settings.reap_queued_after + 60)
    dispatcher.send([10**9], QUEUE)  # a backlog: another job's task still waits in the queue
    assert depth(QUEUE) == 1

    waiting = reap(settings, dispatcher)

    assert not set(ids) & set(waiting.resent_queued)
    assert _sent_chunks(broker) == [[10**9]], "nothing added to a queue that still drains"
    _die_after_claim(settings, ids[:1], lease_left_s=-60)  # stuck running: never waits
    stuck = reap(settings, dispatcher)
    assert ids[0] in stuck.requeued_running
    assert ids[1] not in stuck.resent_queued
    broker.delete(QUEUE)  # the backlog drained, and ids[1] had no message after all
    assert depth(QUEUE) == 0
    with session_scope(settings.sqlalchemy_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.updated_at = utcnow() - timedelta(seconds=settings.reap_queued_after + 60)

    drained = reap(settings, dispatcher)

    assert ids[1] in drained.resent_queued
    # ids[0] too: its re-sent message went with the deleted backlog
    assert sum(chunk.count(ids[1]) for chunk in _sent_chunks(broker)) == 1
