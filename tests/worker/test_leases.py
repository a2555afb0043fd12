"""Leases: a claim holds its studies, the heartbeat renews them, a lapsed or restarted
holder's studies come back through the reaper, and a live holder's are left alone."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, update

from config.settings import Settings
from core.dispatch import Dispatcher
from db import status
from db.models import UNFINISHED_STUDY, Job, Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope
from tests.conftest import patient_files, queued_study_ids
from worker.leases import Heartbeat, lease_owner
from worker.reaper import reap
from worker.segmentation import SegmentationService

QUEUE = "tumorseg.test.leases"
_made: list[int] = []  # studies the tests of this module created


@pytest.fixture(autouse=True)
def _leave_nothing_running(settings: Settings) -> Iterator[None]:
    """Cancel what a test left queued or running, so no later pass takes it up."""
    yield
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(Study)
            .where(Study.id.in_(_made), Study.status.in_(UNFINISHED_STUDY))
            .values(status=StudyStatus.CANCELLED, lease_owner=None, lease_expires_at=None)
        )
    _made.clear()


def _job(settings: Settings, n: int) -> list[int]:
    studies = [jobs_repo.NewStudy(img.name, img.read_bytes()) for img, _ in patient_files(n)]
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.create_job(session, QUEUE, studies)
        ids = queued_study_ids(session, job.id)
    _made.extend(ids)
    return ids


def _hold(settings: Settings, ids: list[int], owner: str, expires_in: float) -> None:
    """Leave the rows as a worker ``owner`` that claimed them leaves them."""
    now = utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        for study in session.scalars(select(Study).where(Study.id.in_(ids))):
            study.status, study.attempts, study.started_at = StudyStatus.RUNNING, 1, now
            study.lease_owner = owner
            study.lease_expires_at = now + timedelta(seconds=expires_in)


def _rows(settings: Settings, ids: list[int]) -> dict[int, Study]:
    with session_scope(settings.sqlalchemy_url) as session:
        return {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(ids)))}


def _sent(broker: redis.Redis) -> list[list[int]]:
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
        for raw in reversed(broker.lrange(QUEUE, 0, -1))
    ]


def test_heartbeat_renews_only_its_own_running_leases(settings: Settings) -> None:
    ids = _job(settings, 3)
    me, other = lease_owner("lease-test@host", 1), lease_owner("other@host", 2)
    _hold(settings, ids[:2], me, expires_in=5)
    _hold(settings, ids[2:], other, expires_in=5)
    before = _rows(settings, ids)

    renewed = Heartbeat(settings, ids, me).renew()

    after = _rows(settings, ids)
    assert renewed == 2
    for i in ids[:2]:  # a lease ahead again
        assert after[i].lease_expires_at > before[i].lease_expires_at  # type: ignore[operator]
    assert after[ids[2]].lease_expires_at == before[ids[2]].lease_expires_at  # not mine


def test_a_lapsed_lease_is_requeued_and_sent_once_and_a_live_one_is_left_alone(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher
) -> None:
    ids = _job(settings, 3)
    _hold(settings, ids[:2], lease_owner("dead@host", 7), expires_in=-1)  # lapsed
    _hold(settings, ids[2:], lease_owner("alive@host", 8), expires_in=60)

    report = reap(settings, dispatcher)

    assert [i for i in report.requeued_running if i in ids] == ids[:2]
    assert report.holders[ids[0]] == "dead@host:7"
    assert _sent(broker) == [ids[:2]]
    rows = _rows(settings, ids)
    assert all(rows[i].status is StudyStatus.QUEUED and rows[i].lease_owner is None
               for i in ids[:2])  # fmt: skip
    assert all(rows[i].requeues == 1 and rows[i].attempts == 1 for i in ids[:2])
    assert rows[ids[2]].status is StudyStatus.RUNNING
    assert rows[ids[2]].requeues == 0
    assert not set(ids) & set(reap(settings, dispatcher).requeued_running)  # taken back once
    assert _sent(broker) == [ids[:2]]


def test_a_starting_node_takes_back_what_it_held_before_its_lease_lapses(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher
) -> None:
    ids = _job(settings, 2)
    _hold(settings, ids[:1], lease_owner("restarted@host", 11), expires_in=60)
    _hold(settings, ids[1:], lease_owner("restarted@host2", 12), expires_in=60)  # other node

    report = reap(settings, dispatcher, node="restarted@host")

    assert [i for i in report.requeued_running if i in ids] == ids[:1]
    assert _sent(broker) == [ids[:1]]
    assert _rows(settings, ids)[ids[1]].status is StudyStatus.RUNNING


def test_overlapping_passes_take_back_and_resend_a_study_once(settings: Settings) -> None:
    ids = _job(settings, 2)
    _hold(settings, ids[:1], lease_owner("dead@host", 3), expires_in=-1)
    now = utcnow()
    long_ago = now - timedelta(days=1)
    with session_scope(settings.sqlalchemy_url) as session:  # both passes found ids[0] lost
        job_id = session.scalars(select(Study.job_id).where(Study.id == ids[0])).one()
        first = status.requeue(session, ids, {}, now=now, idle_before=long_ago)
        assert first.requeued == ids[:1]
        assert first.to_send == [(ids[0], QUEUE)]
    with session_scope(settings.sqlalchemy_url) as session:  # the second pass: too late
        second = status.requeue(session, ids, {}, now=now, idle_before=long_ago)
        assert second.requeued == []
        assert second.to_send == []
        job = session.get(Job, job_id)
        assert job is not None
        job.updated_at = now - timedelta(hours=1)
    idle, times = {job_id: ids}, {"now": now, "idle_before": now}
    with session_scope(settings.sqlalchemy_url) as session:  # both found the job idle
        first = status.requeue(session, [], idle, **times)
        assert [i for i, _ in first.to_send] == ids
        assert first.resent == ids
    with session_scope(settings.sqlalchemy_url) as session:
        second = status.requeue(session, [], idle, **times)
        assert second.to_send == []
        assert second.resent == []


def test_a_claim_skips_studies_another_live_worker_holds_and_takes_a_dead_process_s(
    settings: Settings, service: SegmentationService
) -> None:
    ids = _job(settings, 2)
    node = "claim-test@host"
    _hold(settings, ids[:1], lease_owner("busy@elsewhere", 5), expires_in=3600)
    _hold(settings, ids[1:], lease_owner(node, 2**22 + 1), expires_in=3600)  # no such pid

    report = service.run_chunk(ids, owner=lease_owner(node))

    rows = _rows(settings, ids)
    assert report.skipped == ids[:1]
    assert rows[ids[0]].status is StudyStatus.RUNNING
    assert rows[ids[0]].attempts == 1
    assert rows[ids[0]].lease_owner == "busy@elsewhere:5"
    assert report.succeeded == ids[1:]
    assert rows[ids[1]].attempts == 2
    assert rows[ids[1]].lease_owner is None
    assert rows[ids[1]].lease_expires_at is None
