"""Fixtures shared by the reaper and lease tests: the test queue in the real Redis, a
real Celery producer, and one segmentation service per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.settings import Settings
from worker.celery_app import create_celery_app
from worker.predictor_cache import PredictorCache
from worker.reaper import Sender, celery_sender
from worker.segmentation import SegmentationService


@pytest.fixture
def broker(settings: Settings, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The test Redis db, with the module's `QUEUE` emptied before and after."""
    queue = request.module.QUEUE
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(queue)
    yield client
    client.delete(queue)
    client.close()


@pytest.fixture
def send(settings: Settings) -> Iterator[Sender]:
    """A real Celery producer to the test Redis."""
    app = create_celery_app(settings, settings.redis_url or "", include_tasks=False)
    yield celery_sender(app)
    app.close()


@pytest.fixture(scope="module")
def service(settings: Settings) -> SegmentationService:
    return SegmentationService(settings, PredictorCache(device="cpu", batch_size=4))
