"""Fixtures shared by the reaper and lease tests: the test queue in the real Redis, a
real dispatcher, and one segmentation service per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from config.settings import Settings
from core.dispatch import Dispatcher
from worker.predictor_cache import PredictorCache
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
def dispatcher(settings: Settings) -> Iterator[Dispatcher]:
    """A real Celery producer to the test Redis."""
    dispatcher = Dispatcher(settings)
    yield dispatcher
    dispatcher.close()


@pytest.fixture(scope="module")
def service(settings: Settings) -> SegmentationService:
    return SegmentationService(settings, PredictorCache(device="cpu", batch_size=4, members=1))
