"""Thin Celery tasks: take ids, hand them to the segmentation service."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from config.settings import get_settings
from core.celery_app import ARCHIVE_SCAN_TASK, REAP_TASK, SEGMENT_TASK
from core.dispatch import Dispatcher
from worker import metrics
from worker.leases import lease_owner
from worker.reaper import reap
from worker.segmentation import SegmentationService

logger = logging.getLogger(__name__)

_service: tuple[int, SegmentationService] | None = None


def get_service(app: Celery) -> SegmentationService:
    """This process's segmentation service (its one cached predictor, and its dispatcher
    on the worker's app)."""
    global _service
    if _service is None or _service[0] != os.getpid():
        settings = get_settings()
        service = SegmentationService(settings, dispatcher=Dispatcher(settings, app))
        _service = (os.getpid(), service)
    return _service[1]


# Celery has no type hints: to mypy its task decorator makes the functions untyped.
@shared_task(name=SEGMENT_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def segment_chunk(self: Task, study_ids: list[int]) -> dict[str, Any]:
    """Segment one chunk of studies by id; idempotent, so redelivery is harmless."""
    service = get_service(self.app)
    try:
        report = service.run_chunk(study_ids, lease_owner(self.request.hostname))
    except SoftTimeLimitExceeded:
        limit = service.settings.task_soft_time_limit
        n = service.fail_unfinished(study_ids, f"timed out: the chunk ran over {limit}s")
        metrics.record_unfinished(n)
        logger.error("chunk %s timed out; %d studies failed", study_ids, n)
        return {"timed_out": True, "failed": n}
    except OperationalError as exc:  # database unreachable for a moment: try again later
        settings = service.settings
        logger.warning("chunk %s: database error, retrying: %s", study_ids, exc)
        raise self.retry(
            exc=exc, countdown=settings.task_retry_delay, max_retries=settings.task_db_retries
        ) from exc
    except Exception as exc:
        logger.exception("chunk %s failed", study_ids)
        n = service.fail_unfinished(study_ids, f"internal error: {type(exc).__name__}: {exc}")
        metrics.record_unfinished(n)
        raise
    metrics.record_chunk(report)
    return report.as_dict()


@shared_task(name=REAP_TASK, bind=True)  # type: ignore[untyped-decorator]
def reap_stuck(self: Task) -> dict[str, Any]:
    """Re-queue studies stuck in running (or queued with no activity); for a beat schedule."""
    service = get_service(self.app)
    return reap(service.settings, service.dispatcher).as_dict()


@shared_task(name=ARCHIVE_SCAN_TASK, bind=True)  # type: ignore[untyped-decorator]
def archive_scan(self: Task) -> dict[str, Any]:
    """Nightly archive scan (Celery beat); its Redis lock keeps two beats from both scanning."""
    from archive.scan import scan_archive  # lazy: only this task reads the archive

    service = get_service(self.app)
    return scan_archive(service.settings, dispatcher=service.dispatcher).as_dict()
