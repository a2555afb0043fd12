"""Health, readiness (and its failure), /predict validation and timeout, broker outage."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.conftest import PATIENT_IMGS, bearer, create_api_key

SAMPLE = (PATIENT_IMGS / "patient_000.png").read_bytes()


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["database"] == "ok" and checks["broker"] == "ok"
    assert checks["model"].startswith("ok")


def test_broker_down_gives_503_and_fails_the_job_instead_of_leaving_it_stuck(
    api_settings: Settings,
) -> None:
    dead = api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    key = create_api_key(dead.sqlalchemy_url, "broker-down")
    with TestClient(create_app(dead), headers=bearer(key)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("error")
        response = client.post("/v1/jobs", files=[("files", ("a.png", SAMPLE, "image/png"))])
        assert response.status_code == 503 and "broker unavailable" in response.json()["detail"]
        newest = client.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
        assert newest["status"] == "failed" and "broker unavailable" in newest["error"]


def test_predict_rejects_bad_input_with_4xx(client: TestClient) -> None:
    assert client.post("/predict", json={"img": "%%% not base64"}).status_code == 422
    not_png = base64.b64encode(b"hello").decode()
    response = client.post("/predict", json={"img": not_png})
    assert response.status_code == 422 and "not a PNG" in response.json()["detail"]
    assert client.post("/predict", json={}).status_code == 422


def test_predict_times_out_with_504_and_cancels_the_study(client: TestClient) -> None:
    # no worker consumes this app's queues, and predict_timeout is 1 s
    response = client.post("/predict", json={"img": base64.b64encode(SAMPLE).decode()})
    assert response.status_code == 504 and "within" in response.json()["detail"]
    newest = client.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
    assert newest["status"] == "cancelled"
