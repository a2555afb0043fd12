"""Recovery at the shipped defaults: the workers get only the database and Redis URLs.

No timing setting is shortened and nothing in the test process runs the reaper: what
brings lost work back is the workers' own recovery (a pass at start-up, then one every
``TUMORSEG_REAP_INTERVAL`` s over lapsed leases and lost task messages). Redis runs
without persistence, as the embedded default does.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from api.app import create_app
from config.settings import Settings
from db.models import Job, Result, Study, StudyStatus
from db.session import dispose_engines, session_scope
from tests.chaos.conftest import (
    Fleet,
    RedisServer,
    Worker,
    _free_port,
    create_key,
    study_files,
)
from tests.conftest import temporary_pg_database

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]  # 3 worker starts on 2 cores

STUDIES = 60
KILLS = 3
#: The job must end this long after the last fault (the issue's bound: 3 minutes).
FINISH_WITHIN = 180.0
#: The CLI's default node name: a worker started again comes back as the same node.
NODE = "tumorseg@%h"


@pytest.fixture(scope="module")
def bare_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server without persistence: a restart loses every message."""
    server = RedisServer(tmp_path_factory.mktemp("bare-redis"), _free_port(), persist=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def defaults(
    bare_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The shipped defaults on a database and a Redis of these tests alone."""
    with temporary_pg_database("tumorseg_defaults") as (url, _, _):
        yield Settings(  # type: ignore[call-arg]  # every other field at its default
            database_url=url, redis_url=bare_redis.url, var_dir=tmp_path_factory.mktemp("var")
        )
        dispose_engines()


@pytest.fixture
def fleet(defaults: Settings, tmp_path: Path) -> Iterator[Fleet]:
    """Workers that see the two URLs and nothing else of the settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")}
    env |= {
        "TUMORSEG_DATABASE_URL": defaults.sqlalchemy_url,
        "TUMORSEG_REDIS_URL": defaults.redis_url or "",
        "OMP_NUM_THREADS": "1",  # two cores: leave one for the tests
    }
    f = Fleet(defaults, tmp_path, env=env)
    yield f
    f.stop_all()


def _small(png: bytes) -> bytes:
    """A real study at half its side: the test is about recovery, and the model's seconds
    per study (on 2 shared cores) would otherwise decide the job's end; at a quarter, a
    study redelivered alone runs for less than the test's poll and no kill can land."""
    image = Image.open(io.BytesIO(png))
    out = io.BytesIO()
    image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR).save(
        out, format="PNG"
    )
    return out.getvalue()


def _submit(settings: Settings) -> tuple[int, list[int]]:
    files = [
        (field, (name, _small(png), mime)) for field, (name, png, mime) in study_files(STUDIES)
    ]
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        response = client.post("/v1/jobs", files=files)
    assert response.status_code == 202, response.text
    job_id = int(response.json()["id"])
    with session_scope(settings.sqlalchemy_url) as session:
        ids = list(session.scalars(select(Study.id).where(Study.job_id == job_id)))
    return job_id, ids


def _rows(settings: Settings, job_id: int) -> dict[int, tuple[StudyStatus, int, int, str | None]]:
    """Study id -> (status, attempts, requeues, lease owner)."""
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(
            select(Study.id, Study.status, Study.attempts, Study.requeues, Study.lease_owner)
            .where(Study.job_id == job_id)
        )  # fmt: skip
        return {i: (StudyStatus(s), a, r, o) for i, s, a, r, o in rows}


def _finished(rows: dict[int, tuple[StudyStatus, int, int, str | None]]) -> bool:
    return all(s not in (StudyStatus.QUEUED, StudyStatus.RUNNING) for s, *_ in rows.values())


def _wait_finished(settings: Settings, job_id: int, fleet: Fleet, since: float) -> float:
    """Seconds from ``since`` until every study of the job finished (no reaper here)."""
    while True:
        rows = _rows(settings, job_id)
        if _finished(rows):
            return time.monotonic() - since
        if time.monotonic() - since > 600:
            counts = {s: [r[0] for r in rows.values()].count(s) for s in StudyStatus}
            pytest.fail(f"job {job_id} stuck at {counts}\n{fleet.logs()}")
        time.sleep(0.5)


def _assert_exactly_once(settings: Settings, job_id: int, ids: list[int]) -> None:
    rows = _rows(settings, job_id)
    assert len(rows) == STUDIES
    assert {r[0] for r in rows.values()} == {StudyStatus.SUCCEEDED}
    assert all(r[3] is None for r in rows.values()), "a finished study kept its lease"
    with session_scope(settings.sqlalchemy_url) as session:
        results = session.execute(
            select(Result.study_id, func.count())
            .where(Result.study_id.in_(ids))
            .group_by(Result.study_id)
        ).all()
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status.value == "succeeded"
    assert len(results) == STUDIES
    assert all(n == 1 for _, n in results)
    assert max(r[1] for r in rows.values()) <= settings.max_deliveries


def test_three_sigkilled_workers_at_the_defaults_lose_nothing_and_the_job_ends_in_3_minutes(
    defaults: Settings, fleet: Fleet
) -> None:
    settings = defaults
    job_id, ids = _submit(settings)
    # after each kill: the same node again (its start-up pass takes back what it held),
    # then a new node (the dead one's leases lapse; a periodic pass re-queues them)
    restarts = [NODE, "relief@%h", NODE]
    worker: Worker = fleet.start(NODE)
    kills: list[tuple[float, list[int], dict[int, int]]] = []  # when, ids, requeues then
    killed_per_study: dict[int, int] = {}
    recovered: list[float] = []
    deadline = time.monotonic() + 900
    while len(kills) < KILLS or len(recovered) < KILLS:
        assert time.monotonic() < deadline, f"{len(kills)} kills\n{fleet.logs()}"
        claims = [c for c in worker.new_claims() if c] if len(kills) < KILLS else []
        rows = _rows(settings, job_id)  # after the log: a logged claim is committed
        for start, chunk, requeues in kills[len(recovered) :]:  # back in the queue yet?
            if all(rows[i][2] > requeues[i] or rows[i][0] is StudyStatus.SUCCEEDED
                   for i in chunk):  # fmt: skip
                recovered.append(time.monotonic() - start)
            break
        done = sum(r[0] is StudyStatus.SUCCEEDED for r in rows.values())
        # the first two kills as soon as the chunks are claimed, the last one late in the
        # job: what follows it is then mostly the recovery, not the model's work
        if claims and (len(kills) < KILLS - 1 or done >= STUDIES * 2 // 3):
            chunk = claims[-1]
            held = all(rows[i][0] is StudyStatus.RUNNING for i in chunk)
            # at most max_deliveries - 1 kills per study: the last delivery must succeed
            spare = all(killed_per_study.get(i, 0) < settings.max_deliveries - 1 for i in chunk)
            if held and spare:
                worker.kill()  # the whole node, while it holds these studies
                kills.append((time.monotonic(), chunk, {i: rows[i][2] for i in chunk}))
                for i in chunk:
                    killed_per_study[i] = killed_per_study.get(i, 0) + 1
                worker = fleet.start(restarts[len(kills) - 1])
        time.sleep(0.02)  # a study redelivered alone runs for a fraction of a second
    last_kill = kills[-1][0]

    took = _wait_finished(settings, job_id, fleet, since=last_kill)

    logger.info(
        "recovery after each kill: %s s; job finished %.1f s after the last kill",
        [round(r, 1) for r in recovered],
        took,
    )
    _assert_exactly_once(settings, job_id, ids)
    assert took <= FINISH_WITHIN, f"finished {took:.0f} s after the last kill"
    killed = set(killed_per_study)
    rows = _rows(settings, job_id)
    assert all(rows[i][1] >= 2 and rows[i][2] >= 1 for i in killed)  # came back, done again
    # the first kill's node came back at once: only its start-up pass takes its chunk
    # back before the lease lapses (a periodic pass waits for the lease)
    assert recovered[0] < settings.lease_seconds, recovered
    with TestClient(create_app(settings), headers=create_key(settings)) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["progress"] == 1.0
    assert job["aggregates"]["requeued_studies"] >= len(killed)
    shown = {s["id"]: s for s in job["studies"]}
    assert all(shown[i]["requeues"] >= 1 and shown[i]["attempts"] >= 2 for i in killed)


def test_redis_restart_without_persistence_at_the_defaults_and_the_job_completes(
    defaults: Settings, bare_redis: RedisServer, fleet: Fleet
) -> None:
    settings = defaults
    worker = fleet.start(NODE)
    job_id, ids = _submit(settings)
    deadline = time.monotonic() + 180
    while not any(r[0] is StudyStatus.RUNNING for r in _rows(settings, job_id).values()):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)

    bare_redis.restart()  # every queued and unacknowledged message is gone
    restarted = time.monotonic()

    took = _wait_finished(settings, job_id, fleet, since=restarted)

    logger.info("job finished %.1f s after the Redis restart", took)
    _assert_exactly_once(settings, job_id, ids)
    assert took <= FINISH_WITHIN, f"finished {took:.0f} s after the restart"
    rows = _rows(settings, job_id)
    lost = {i for i, r in rows.items() if r[2] >= 1}
    assert lost, "the restart lost no message: no fault was injected"
    # `requeues` counts only the recovery passes' re-queues and re-sends: every lost
    # message was recovered by a pass, and no study was done twice (above)
    assert worker.proc.poll() is None, "the worker died with Redis instead of reconnecting"
