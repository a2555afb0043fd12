"""Admission limits: per-key rate (429) and queue back-pressure (503), both with Retry-After."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.conftest import SAMPLE_IMGS, bearer, create_api_key

SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()
FILES = [("files", ("a.png", SAMPLE, "image/png"))]


def test_rate_limit_answers_429_with_retry_after_per_key(api_settings: Settings) -> None:
    tight = api_settings.model_copy(update={"submit_rate_per_minute": 1.0, "submit_burst": 3})
    url = tight.sqlalchemy_url
    first, second = create_api_key(url, "burst-a"), create_api_key(url, "burst-b")
    with TestClient(create_app(tight)) as client:
        codes = [
            client.post("/v1/jobs", files=FILES, headers=bearer(first)).status_code
            for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        refused = client.post("/v1/jobs", files=FILES, headers=bearer(first))
        assert refused.status_code == 429
        assert "rate limit" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # the bucket is per key: another key still gets in; reading is never limited
        assert client.post("/v1/jobs", files=FILES, headers=bearer(second)).status_code == 202
        assert client.get("/v1/jobs", headers=bearer(first)).status_code == 200


def test_full_queue_answers_503_with_retry_after_and_creates_no_job(
    api_settings: Settings,
) -> None:
    queue = "tumorseg.test.backpressure"
    small = api_settings.model_copy(
        update={"interactive_queue": queue, "max_queue_depth": 3, "retry_after_seconds": 7}
    )
    broker = redis.Redis.from_url(small.redis_url or "")
    broker.delete(queue)
    key = bearer(create_api_key(small.sqlalchemy_url, "backpressure"))
    try:
        with TestClient(create_app(small), headers=key) as client:
            before = client.get("/v1/jobs").json()["total"]
            accepted = [client.post("/v1/jobs", files=FILES).status_code for _ in range(3)]
            assert accepted == [202, 202, 202]
            assert broker.llen(queue) == 3
            refused = client.post("/v1/jobs", files=FILES)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "7"
            assert "full" in refused.json()["detail"]
            assert client.get("/v1/jobs").json()["total"] == before + 3  # nothing half-made
            broker.lpop(queue)  # a worker took one task: room again
            assert client.post("/v1/jobs", files=FILES).status_code == 202
    finally:
        broker.delete(queue)
        broker.close()
