"""Thin Celery tasks: take ids, hand them to the segmentation service."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from config.settings import SEGMENT_TASK_NAME, get_settings
from worker.segmentation import SegmentationService

logger = logging.getLogger(__name__)

_service: tuple[int, SegmentationService] | None = None


def get_service() -> SegmentationService:
    """This process's segmentation service (and thus its one cached predictor)."""
    global _service
    if _service is None or _service[0] != os.getpid():
        _service = (os.getpid(), SegmentationService(get_settings()))
    return _service[1]


@shared_task(name=SEGMENT_TASK_NAME, bind=True, max_retries=3)
def segment_chunk(self: Task, study_ids: list[int]) -> dict[str, Any]:
    """Segment one chunk of studies by id; idempotent, so redelivery is harmless."""
    service = get_service()
    try:
        return service.run_chunk(study_ids).as_dict()
    except SoftTimeLimitExceeded:
        limit = service.settings.task_soft_time_limit
        n = service.fail_unfinished(study_ids, f"timed out: the chunk ran over {limit}s")
        logger.error("chunk %s timed out; %d studies failed", study_ids, n)
        return {"timed_out": True, "failed": n}
    except OperationalError as exc:  # database unreachable for a moment: try again later
        logger.warning("chunk %s: database error, retrying: %s", study_ids, exc)
        raise self.retry(exc=exc, countdown=10) from exc
    except Exception as exc:
        logger.exception("chunk %s failed", study_ids)
        service.fail_unfinished(study_ids, f"internal error: {type(exc).__name__}: {exc}")
        raise
