"""The worker's metrics move with the reports of chunks and recovery passes."""

from __future__ import annotations

from datetime import timedelta

import redis
from prometheus_client import REGISTRY
from sqlalchemy import select

from config.settings import Settings
from core.dispatch import Dispatcher
from db.models import Study, StudyStatus, utcnow
from db.repositories import jobs as jobs_repo
from db.session import session_scope
from tests.conftest import patient_files, queued_study_ids
from worker import metrics
from worker.reaper import ReapReport, reap
from worker.segmentation import ChunkReport

QUEUE = "tumorseg.test.worker-metrics"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_chunk_counts_its_studies_by_outcome_and_model_version_and_its_seconds() -> None:
    version = "test-model-metrics-1"  # this test's alone: its series start at zero
    metrics.record_chunk(
        ChunkReport(version, succeeded=[1, 2, 3], failed=[4], seconds=7.0, phases={"predict": 3.0})
    )
    metrics.record_chunk(ChunkReport(version, skipped=[5], seconds=0.2, phases={"claim": 0.2}))

    studies = "tumorseg_worker_studies_total"
    assert _value(studies, outcome="succeeded", model_version=version) == 3
    assert _value(studies, outcome="failed", model_version=version) == 1
    chunk = "tumorseg_worker_chunk_seconds"
    assert _value(f"{chunk}_count", model_version=version) == 2
    assert _value(f"{chunk}_sum", model_version=version) == 7.2
    assert _value(f"{chunk}_bucket", model_version=version, le="5.0") == 1
    predict = "tumorseg_worker_predict_seconds"
    assert _value(f"{predict}_count", model_version=version) == 1  # the second claimed nothing
    assert _value(f"{predict}_sum", model_version=version) == 3.0


def test_studies_failed_without_a_report_count_under_an_unknown_version() -> None:
    labels = {"outcome": "failed", "model_version": metrics.UNKNOWN_VERSION}
    before = _value("tumorseg_worker_studies_total", **labels)
    metrics.record_unfinished(4)
    assert _value("tumorseg_worker_studies_total", **labels) == before + 4


def test_a_recovery_pass_counts_the_leases_it_recovered(
    settings: Settings, broker: redis.Redis, dispatcher: Dispatcher
) -> None:
    studies = [jobs_repo.NewStudy(img.name, img.read_bytes()) for img, _ in patient_files(2)]
    with session_scope(settings.sqlalchemy_url) as session:
        job = jobs_repo.create_job(session, QUEUE, studies)
        ids = queued_study_ids(session, job.id)
        for study in session.scalars(select(Study).where(Study.id.in_(ids))):
            # what a SIGKILLed worker leaves: running under a lease that lapsed
            study.status, study.attempts = StudyStatus.RUNNING, 1
            study.started_at = utcnow() - timedelta(minutes=5)
            study.lease_owner = "dead@elsewhere:1"
            study.lease_expires_at = utcnow() - timedelta(minutes=1)
    leases, resent = (
        _value("tumorseg_worker_leases_recovered_total"),
        _value("tumorseg_worker_studies_resent_total"),
    )

    report = reap(settings, dispatcher)

    assert set(ids) <= set(report.requeued_running)
    assert _value("tumorseg_worker_leases_recovered_total") == leases + len(report.requeued_running)
    assert _value("tumorseg_worker_studies_resent_total") == resent + len(report.resent_queued)
    metrics.record_recovery(ReapReport(resent_queued=[1, 2]))
    assert _value("tumorseg_worker_studies_resent_total") == resent + len(report.resent_queued) + 2
