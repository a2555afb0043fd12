"""API fixtures: the real app on a real database and Redis, with no worker listening."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    """Like the session settings, but on queues no worker consumes, so jobs stay queued."""
    return settings.model_copy(
        update={
            "batch_queue": "tumorseg.test.unconsumed",
            "interactive_queue": "tumorseg.test.unconsumed.interactive",
            "max_studies_per_job": 5,
            "max_upload_bytes": 400_000,
            "max_image_side": 2048,
            "max_image_pixels": 1_500_000,
            "predict_timeout": 1.0,
        }
    )


@pytest.fixture(scope="session")
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client
