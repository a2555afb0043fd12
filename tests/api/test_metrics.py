"""GET /metrics: requests by route template and status, latency, queue depth per queue."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.metrics import UNMATCHED
from config.settings import Settings
from tests.conftest import bearer, create_api_key
from tests.prometheus import series, value


@pytest.fixture
def own_settings(api_settings: Settings) -> Settings:
    """The API settings on queues of this test alone."""
    queue = f"tumorseg.test.metrics.{secrets.token_hex(4)}"
    return api_settings.model_copy(
        update={"interactive_queue": queue, "nightly_queue": f"{queue}.nightly"}
    )


@pytest.fixture
def metrics_client(own_settings: Settings) -> Iterator[TestClient]:
    """A fresh app, so its counters start at zero; no key sent by default."""
    with TestClient(create_app(own_settings)) as client:
        yield client


def test_requests_are_counted_by_route_template_and_status(
    metrics_client: TestClient, own_settings: Settings
) -> None:
    headers = bearer(create_api_key(own_settings.sqlalchemy_url, "metrics"))
    assert metrics_client.get("/healthz").status_code == 200
    assert metrics_client.get("/healthz").status_code == 200
    assert metrics_client.get("/v1/jobs/999999", headers=headers).status_code == 404
    assert metrics_client.get("/v1/jobs/999998", headers=headers).status_code == 404
    assert metrics_client.get("/v1/jobs/1").status_code == 401  # no key
    assert metrics_client.get("/no/such/path/42").status_code == 404
    assert metrics_client.delete("/healthz").status_code == 405
    assert metrics_client.get("/ui/static/ui.css").status_code == 200
    assert metrics_client.get("/ui/login").status_code == 200

    text = metrics_client.get("/metrics").text
    requests = series(text, "tumorseg_api_requests_total")
    assert requests == {
        frozenset({("method", "GET"), ("route", "/healthz"), ("status", "200")}): 2.0,
        frozenset({("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")}): 2.0,
        frozenset({("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "401")}): 1.0,
        frozenset({("method", "GET"), ("route", UNMATCHED), ("status", "404")}): 1.0,
        frozenset({("method", "DELETE"), ("route", "/healthz"), ("status", "405")}): 1.0,
        frozenset({("method", "GET"), ("route", "/ui/static"), ("status", "200")}): 1.0,
        frozenset({("method", "GET"), ("route", "/ui/login"), ("status", "200")}): 1.0,
    }  # the scrape itself is counted once it has answered
    count = "tumorseg_api_request_duration_seconds_count"
    assert value(text, count, method="GET", route="/v1/jobs/{job_id}") == 3.0
    assert value(text, count, method="GET", route="/healthz") == 2.0
    assert value(text, "tumorseg_api_request_duration_seconds_sum", method="GET", route="/healthz")
    bucket = "tumorseg_api_request_duration_seconds_bucket"
    assert value(text, bucket, method="GET", route="/healthz", le="+Inf") == 2.0

    again = metrics_client.get("/metrics").text
    assert value(again, "tumorseg_api_requests_total", method="GET", route="/metrics", status="200")
    assert "process_cpu_seconds_total" in again


def test_metrics_are_open_and_in_the_prometheus_text_format(metrics_client: TestClient) -> None:
    response = metrics_client.get("/metrics")  # no key, like /healthz
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "/metrics" not in metrics_client.get("/openapi.json").json()["paths"]


def test_queue_depth_is_reported_for_each_queue(
    metrics_client: TestClient, own_settings: Settings
) -> None:
    broker = redis.Redis.from_url(str(own_settings.redis_url))
    interactive, nightly = own_settings.interactive_queue, own_settings.nightly_queue
    try:
        broker.rpush(interactive, "a", "b", "c")
        text = metrics_client.get("/metrics").text
    finally:
        broker.delete(interactive)
        broker.close()
    assert series(text, "tumorseg_queue_depth") == {
        frozenset({("queue", interactive)}): 3.0,
        frozenset({("queue", nightly)}): 0.0,
    }
    assert value(text, "tumorseg_broker_up") == 1.0


def test_metrics_answer_without_the_depths_while_the_broker_is_down(
    own_settings: Settings,
) -> None:
    dead = own_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as client:
        client.get("/healthz")
        response = client.get("/metrics")
    assert response.status_code == 200
    assert value(response.text, "tumorseg_broker_up") == 0.0
    assert series(response.text, "tumorseg_queue_depth") == {}
    assert value(
        response.text, "tumorseg_api_requests_total", method="GET", route="/healthz", status="200"
    )
