"""PACS endpoint settings: read from JSON, refused when unsafe; beat and the routes of the
export tasks."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from config.settings import PacsEndpoint, Settings
from core.celery_app import PACS_EXPORT_TASK, PACS_OUTBOX_TASK, beat_config, celery_config

SECRET = "0123456789abcdefghijklmnopqrstuvwxyz"


def test_endpoints_are_read_from_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = [
        {"name": "main", "url": "https://pacs.example/dicom-web", "auth": "basic",
         "username": "tumorseg", "password": "pw", "export": True},
        {"name": "research", "url": "http://127.0.0.1:8042/dicom-web"},
    ]  # fmt: skip
    monkeypatch.setenv("TUMORSEG_PACS_ENDPOINTS", json.dumps(endpoints))
    settings = Settings()
    main = settings.pacs_endpoint("main")
    assert main.password is not None
    assert main.password.get_secret_value() == "pw"
    assert "pw" not in repr(main)  # a secret never shows in logs
    assert main.export
    assert main.export_overlay
    research = settings.pacs_endpoint("research")
    assert (research.auth, research.export, research.verify_tls) == ("none", False, True)
    assert research.loopback
    with pytest.raises(KeyError, match="no PACS endpoint named 'other'"):
        settings.pacs_endpoint("other")


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ({"name": "a", "url": "https://p/dicom-web", "auth": "basic", "username": "u"},
         "needs username and password"),
        ({"name": "a", "url": "https://p/dicom-web", "auth": "bearer"}, "needs a token"),
        ({"name": "A b", "url": "https://p/dicom-web"}, "name"),
        ({"name": "a", "url": "ftp://p/dicom-web"}, "url"),
        ({"name": "a", "url": "https://p", "ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle"),
    ],
)  # fmt: skip
def test_an_incomplete_endpoint_is_refused(endpoint: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PacsEndpoint.model_validate(endpoint)


def test_names_are_unique() -> None:
    twice = [PacsEndpoint(name="a", url="https://p/dicom-web")] * 2
    with pytest.raises(ValidationError, match="names must be unique"):
        Settings(pacs_endpoints=twice)


def test_production_refuses_unchecked_tls_and_credentials_over_plain_http() -> None:
    def production(**endpoint: object) -> Settings:
        checked = PacsEndpoint.model_validate({"name": "main", **endpoint})
        return Settings(environment="production", ui_secret=SECRET, pacs_endpoints=[checked])

    with pytest.raises(ValidationError, match="verify_tls false"):
        production(url="https://pacs.example/dicom-web", verify_tls=False)
    with pytest.raises(ValidationError, match="plain http"):
        production(url="http://pacs.example/dicom-web", auth="bearer", token="t")
    assert production(url="http://127.0.0.1:8042/dicom-web", auth="bearer", token="t")
    assert production(url="http://pacs.example/dicom-web")  # no credentials to leak
    lax = Settings(pacs_endpoints=[PacsEndpoint(name="m", url="https://p", verify_tls=False)])
    assert lax.environment == "development"  # development allows a test PACS


def test_beat_sends_the_outbox_pass_only_when_a_pacs_takes_exports() -> None:
    reading = Settings(pacs_endpoints=[PacsEndpoint(name="m", url="https://p")])
    assert "pacs-outbox" not in beat_config(reading)["beat_schedule"]
    exporting = Settings(
        pacs_endpoints=[PacsEndpoint(name="m", url="https://p", export=True)],
        pacs_outbox_interval=90,
    )
    entry = beat_config(exporting)["beat_schedule"]["pacs-outbox"]
    assert entry["task"] == PACS_OUTBOX_TASK
    assert entry["schedule"] == 90
    assert entry["options"] == {"queue": exporting.interactive_queue, "expires": 90}
    routes = celery_config(exporting, "redis://x:6379/0")["task_routes"]
    assert routes[PACS_EXPORT_TASK] == {"queue": exporting.interactive_queue}
