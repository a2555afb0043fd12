"""Health, readiness (and its failure), /predict validation and timeout."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from tests.conftest import SAMPLE_IMGS

SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["broker"] == "ok"
    assert checks["model"].startswith("ok")


def test_readyz_answers_503_while_the_broker_is_down(api_settings: Settings) -> None:
    # what a job does meanwhile (it stays queued): tests/core/test_dispatch.py
    dead = api_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"].startswith("error")
        assert ready.json()["checks"]["database"] == "ok"


def test_predict_rejects_bad_input_with_4xx(client: TestClient) -> None:
    assert client.post("/predict", json={"img": "%%% not base64"}).status_code == 422
    not_png = base64.b64encode(b"hello").decode()
    response = client.post("/predict", json={"img": not_png})
    assert response.status_code == 422
    assert "not a PNG" in response.json()["detail"]
    assert client.post("/predict", json={}).status_code == 422


def test_predict_times_out_with_504_and_cancels_the_study(client: TestClient) -> None:
    # no worker consumes this app's queues, and predict_timeout is 1 s
    response = client.post("/predict", json={"img": base64.b64encode(SAMPLE).decode()})
    assert response.status_code == 504
    assert "within" in response.json()["detail"]
    newest = client.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
    assert newest["status"] == "cancelled"
    assert newest["name"] == "predict"  # /predict's jobs are named for it in job lists
