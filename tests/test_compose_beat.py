"""docker-compose.yml: the beat service schedules the nightly scan the workers can run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cli.main import COMMANDS, build_parser
from config.settings import Settings
from core.celery_app import ARCHIVE_SCAN_TASK, REAP_TASK, beat_config

ROOT = Path(__file__).resolve().parents[1]


def _services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data["services"]


def _settings_of(service: dict[str, Any]) -> Settings:
    env = service["environment"]
    fields = {f"TUMORSEG_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("TUMORSEG_")} <= fields
    return Settings(**{k.removeprefix("TUMORSEG_").lower(): v for k, v in env.items()})


def test_beat_service_runs_the_beat_command_with_a_health_check() -> None:
    beat = _services()["beat"]
    assert beat["command"][:2] == ["tumorseg", "beat"]
    assert "beat" in COMMANDS
    build_parser("beat").parse_args(beat["command"][1:])
    check = beat["healthcheck"]["test"]
    assert check[1:4] == ["tumorseg", "ping", "beat"]
    build_parser("ping").parse_args(check[2:])
    assert beat["depends_on"]["redis"]["condition"] == "service_healthy"
    assert beat["deploy"]["replicas"] == 1
    assert any(v.endswith(":/home/tumorseg/var") for v in beat["volumes"])  # schedule file


def test_beat_schedules_the_scan_at_the_cron_on_the_nightly_queue() -> None:
    settings = _settings_of(_services()["beat"])
    assert settings.archive_cron == "0 2 * * *"
    assert settings.archive_timezone
    entry = beat_config(settings)["beat_schedule"]["nightly-archive-scan"]
    assert entry["task"] == ARCHIVE_SCAN_TASK
    assert entry["options"]["queue"] == settings.nightly_queue
    assert entry["schedule"].hour == {2}
    assert entry["schedule"].minute == {0}


def test_workers_see_the_archive_read_only_at_the_configured_root() -> None:
    worker = _services()["worker"]
    settings = _settings_of(worker)
    mounts = {v.rsplit(":", 2)[-2]: v for v in worker["volumes"]}  # host:container:mode
    for root in settings.archive_root_paths:
        assert str(root) in mounts
        assert mounts[str(root)].endswith(":ro")


def test_recovery_runs_every_15_to_30_seconds_in_beat_and_in_the_workers() -> None:
    services = _services()
    settings = _settings_of(services["beat"])
    entry = beat_config(settings)["beat_schedule"]["stuck-study-reaper"]
    assert entry["task"] == REAP_TASK
    assert 15 <= entry["schedule"] <= 30
    assert entry["options"]["expires"] == entry["schedule"]  # a late pass is dropped
    worker = _settings_of(services["worker"])
    assert worker.worker_reaper
    assert 15 <= worker.reap_interval <= 30
    assert 30 <= worker.lease_seconds <= 60
    assert worker.reap_queued_after <= 60
