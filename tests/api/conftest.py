"""API fixtures: the real app on a real database and Redis, with no worker listening."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.conftest import bearer, create_api_key


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    """Like the session settings, but on queues no worker consumes, so jobs stay queued."""
    return settings.model_copy(
        update={
            "interactive_queue": "tumorseg.test.unconsumed",
            "nightly_queue": "tumorseg.test.unconsumed.nightly",
            "max_studies_per_job": 5,
            "max_upload_bytes": 400_000,
            "max_image_side": 2048,
            "max_image_pixels": 1_500_000,
            "predict_timeout": 1.0,
            "submit_rate_per_minute": 1e6,
            "submit_burst": 100_000,
            "max_queue_depth": 100_000,
        }
    )


@pytest.fixture(scope="session")
def client(api_settings: Settings) -> Iterator[TestClient]:
    """The API with a client key of the default tenant in every request."""
    key = create_api_key(api_settings.sqlalchemy_url, "api-tests")
    with TestClient(create_app(api_settings), headers=bearer(key)) as test_client:
        yield test_client
