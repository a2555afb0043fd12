"""The unit of work and the dispatcher on the real Redis and databases: sends wait for
the commit, nothing is dropped, one policy when the broker is down (the API's and the
archive's the same), finished-job notices."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from archive.scan import scan_archive
from config.settings import Settings
from core.dispatch import Dispatcher, send_after_commit
from db import status
from db.models import Job, JobStatus, Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope
from tests.archive.conftest import unique_png
from tests.conftest import SAMPLE_IMGS, bearer, create_api_key
from worker.reaper import reap

DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def queues(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The session settings on queues of this test alone, with an archive root."""
    name = f"tumorseg.test.dispatch.{secrets.token_hex(4)}"
    own = settings.model_copy(
        update={
            "interactive_queue": name,
            "nightly_queue": f"{name}.nightly",
            "archive_roots": str(tmp_path),
        }
    )
    yield own
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(own.interactive_queue, own.nightly_queue)
    client.close()


def _waiting(settings: Settings, queue: str) -> list[list[int]]:
    """The study ids of every task waiting in ``queue``, oldest first."""
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        raw = reversed(client.lrange(queue, 0, -1))
        return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in raw]
    finally:
        client.close()


def _studies(settings: Settings, job_id: int) -> dict[int, StudyStatus]:
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(select(Study.id, Study.status).where(Study.job_id == job_id))
        return {int(i): StudyStatus(s) for i, s in rows}


def test_sends_wait_for_the_commit_and_a_rollback_forgets_them(queues: Settings) -> None:
    dispatcher = Dispatcher(queues)
    queue = queues.interactive_queue
    url = queues.sqlalchemy_url
    try:
        with session_scope(url, dispatcher.after_commit) as session:
            job = jobs_repo.create_job(session, queue, [jobs_repo.NewStudy("a.png", b"p")] * 5)
            ids = [s.id for s in job.studies]
            send_after_commit(session, ids, queue)
            assert _waiting(queues, queue) == []  # not before the commit
        assert _waiting(queues, queue) == [ids[:4], ids[4:]]  # chunk_size 4

        def fail_after_sending() -> None:
            with session_scope(url, dispatcher.after_commit) as session:
                send_after_commit(session, ids, queue)
                raise RuntimeError("the request failed after the job was built")

        with pytest.raises(RuntimeError, match="request failed"):
            fail_after_sending()
        assert _waiting(queues, queue) == [ids[:4], ids[4:]]  # nothing more
    finally:
        dispatcher.close()


def test_a_unit_of_work_with_something_to_send_and_no_dispatcher_refuses_to_commit(
    queues: Settings,
) -> None:
    queue = queues.interactive_queue
    job_ids = []
    with (  # noqa: PT012
        pytest.raises(RuntimeError, match="holds send for after its commit"),
        session_scope(queues.sqlalchemy_url) as session,
    ):
        job = jobs_repo.create_job(session, queue, [jobs_repo.NewStudy("a.png", b"p")])
        job_ids.append(job.id)
        send_after_commit(session, [s.id for s in job.studies], queue)
    (job_id,) = job_ids
    with session_scope(queues.sqlalchemy_url) as session:
        assert session.get(Job, job_id) is None, "nothing was committed"
    assert _waiting(queues, queue) == []


def _submit_through_the_api(settings: Settings, dead: Settings) -> int:
    """POST /v1/jobs of an API whose broker is down."""
    key = create_api_key(settings.sqlalchemy_url, "broker-down")
    sample = (SAMPLE_IMGS / "patient_000.png").read_bytes()
    with TestClient(create_app(dead), headers=bearer(key)) as client:
        files = [("files", (f"s{i}.png", sample, "image/png")) for i in range(2)]
        response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text  # the job is taken, as always
    assert response.json()["status"] == "queued"
    return int(response.json()["id"])


def _submit_through_the_archive(settings: Settings, dead: Settings) -> int:
    """An archive scan whose broker goes down between its lock and its send."""
    root = settings.archive_root_paths[0]
    for i in range(2):
        (root / f"s{i}.png").write_bytes(unique_png())
    dispatcher = Dispatcher(dead)
    try:
        report = scan_archive(settings, dispatcher=dispatcher)
    finally:
        dispatcher.close()
    assert report.submitted == 2
    assert report.job_id is not None
    return report.job_id


@pytest.mark.parametrize(
    ("producer", "queue_of"),
    [
        (_submit_through_the_api, lambda s: s.interactive_queue),
        (_submit_through_the_archive, lambda s: s.nightly_queue),
    ],
    ids=["api", "archive"],
)
def test_with_the_broker_down_studies_stay_queued_and_the_recovery_pass_sends_them(
    queues: Settings,
    producer: Callable[[Settings, Settings], int],
    queue_of: Callable[[Settings], str],
) -> None:
    dead = queues.model_copy(update={"redis_url": DEAD_BROKER})
    queue = queue_of(queues)

    job_id = producer(queues, dead)

    studies = _studies(queues, job_id)
    assert len(studies) == 2
    assert set(studies.values()) == {StudyStatus.QUEUED}
    dispatcher = Dispatcher(queues)  # the broker is back
    try:
        with session_scope(queues.sqlalchemy_url) as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert job.status is JobStatus.QUEUED
            assert job.error is None
        assert _waiting(queues, queue) == []  # nothing reached the broker
        assert not set(studies) & set(reap(queues, dispatcher).resent_queued)  # not idle yet
        later = utcnow() + timedelta(seconds=queues.reap_queued_after + 1)
        report = reap(queues, dispatcher, now=later)
        assert set(studies) <= set(report.resent_queued)
        assert _waiting(queues, queue) == [sorted(studies)]
    finally:
        dispatcher.close()


def test_a_job_s_end_is_announced_after_the_commit_to_whoever_watches(
    queues: Settings,
) -> None:
    dispatcher = Dispatcher(queues)
    url = queues.sqlalchemy_url
    with session_scope(url, dispatcher.after_commit) as session:
        study = jobs_repo.NewStudy("a.png", b"p")
        job = jobs_repo.create_job(session, queues.interactive_queue, [study])
        job_id, ids = job.id, [s.id for s in job.studies]

    async def watch() -> tuple[bool, bool]:
        async with dispatcher.notices.watch(job_id) as wait:
            quiet = await wait(0.2)  # nothing finished yet
            with session_scope(url, dispatcher.after_commit) as session:
                status.fail_unfinished(session, ids, "failed by the test")
            return quiet, await wait(10)

    try:
        assert asyncio.run(watch()) == (False, True)
    finally:
        dispatcher.close()
