"""The beat schedule: the cron setting, in the archive's time zone (local when unset)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from celery.utils.time import timezone as celery_timezone

from config.settings import Settings
from core.celery_app import ARCHIVE_SCAN_TASK, SEGMENT_TASK, beat_config, celery_app


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _beat_app(**values: Any) -> Any:
    settings = _settings(redis_url="redis://127.0.0.1:6379/15", **values)
    app = celery_app(settings)
    app.conf.update(beat_config(settings))
    return app


def test_the_scan_runs_at_the_cron_in_the_archive_time_zone() -> None:
    app = _beat_app(archive_cron="30 1 * * 1-5", archive_timezone="Pacific/Auckland")
    entry = app.conf.beat_schedule["nightly-archive-scan"]
    assert entry["task"] == ARCHIVE_SCAN_TASK
    schedule = entry["schedule"]
    schedule.app = app
    assert app.timezone == ZoneInfo("Pacific/Auckland")
    # last run on a Monday 01:30 in Auckland: the next is Tuesday 01:30 there
    last = datetime(2026, 11, 30, 1, 30, tzinfo=ZoneInfo("Pacific/Auckland"))
    start, delta, _now = schedule.remaining_delta(last)
    assert (start + delta).astimezone(ZoneInfo("Pacific/Auckland")).hour == 1
    assert (start + delta - last).total_seconds() == 24 * 3600


def test_without_a_zone_the_machine_local_time_is_used() -> None:
    app = _beat_app()
    assert app.conf.enable_utc is False
    assert app.timezone == celery_timezone.local
    entry = app.conf.beat_schedule["nightly-archive-scan"]
    assert entry["schedule"].hour == {2}
    assert entry["schedule"].minute == {0}
    assert _beat_app(archive_timezone="UTC").timezone.utcoffset(datetime.now(UTC)).seconds == 0


def test_the_scan_task_is_acked_on_receipt_with_its_own_time_limit() -> None:
    settings = _settings(archive_scan_time_limit=7200, redis_url="redis://127.0.0.1:6379/15")
    app = celery_app(settings, include=["worker.tasks"])
    app.loader.import_default_modules()
    scan = app.tasks[ARCHIVE_SCAN_TASK]
    assert scan.acks_late is False  # never redelivered: the next night scans again
    assert scan.time_limit == 7200
    assert scan.soft_time_limit < 7200
    chunk = app.tasks[SEGMENT_TASK]
    assert chunk.acks_late is True
    assert chunk.time_limit == settings.task_time_limit
