"""Settings: environment prefix, derived values, refusal of unsafe combinations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import Settings
from core.broker import redis_py_url, socket_url
from core.celery_app import celery_config


def test_reads_tumorseg_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUMORSEG_CHUNK_SIZE", "3")
    monkeypatch.setenv("TUMORSEG_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("CHUNK_SIZE", "99")  # unprefixed: ignored
    settings = Settings()
    assert settings.chunk_size == 3
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@h/db"


def test_default_database_is_sqlite_under_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path / 'tumorseg.db'}"
    assert settings.redis_url is None  # embedded broker


def test_time_limit_must_stay_below_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(task_time_limit=600, visibility_timeout=600)
    ok = Settings(task_time_limit=100, visibility_timeout=200)
    assert ok.task_soft_time_limit < ok.task_time_limit < ok.visibility_timeout


@pytest.mark.parametrize(
    "bad",
    [
        {"artifact_dir": "/nonexistent/artifact"},
        {"chunk_size": 0},
        {"interactive_queue": "same", "nightly_queue": "same"},
        {"archive_cron": "0 25 * * *"},
        {"archive_cron": "every night"},
        {"archive_timezone": "Mars/Olympus_Mons"},
        {"max_deliveries": 0},
    ],
)
def test_unsafe_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_celery_config_is_safe_for_long_gpu_tasks() -> None:
    settings = Settings(task_time_limit=300, visibility_timeout=900, max_deliveries=2)
    conf = celery_config(settings, "redis://x:6379/0")
    assert conf["task_acks_late"]
    assert conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_time_limit"] == 300 < conf["broker_transport_options"]["visibility_timeout"]
    assert conf["task_soft_time_limit"] < conf["task_time_limit"]
    assert [q.name for q in conf["task_queues"]] == [
        settings.interactive_queue,
        settings.nightly_queue,
    ]
    # each queue on its own exchange, so a message for one never reaches the other
    assert [q.exchange.name for q in conf["task_queues"]] == [
        settings.interactive_queue,
        settings.nightly_queue,
    ]
    # BRPOP lists the queues in this order every time: interactive work first
    assert conf["broker_transport_options"]["queue_order_strategy"] == "priority"


def test_socket_urls_translate_between_kombu_and_redis_py(tmp_path: Path) -> None:
    url = socket_url(tmp_path / "redis.socket")
    assert url.startswith("redis+socket:///")
    assert redis_py_url(url) == f"unix://{tmp_path / 'redis.socket'}"
    assert redis_py_url("redis://h:1/0") == "redis://h:1/0"


def test_png_threads_follow_the_cores_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert Settings().io_threads_per_process == 16  # a GPU host: every core decodes
    assert Settings(worker_concurrency=4).io_threads_per_process == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert Settings(worker_concurrency=2).io_threads_per_process == 2  # never fewer than 2
    assert Settings(io_threads=3).io_threads_per_process == 3


def test_readme_settings_table_lists_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `TUMORSEG_")}
    assert {f"TUMORSEG_{name.upper()}" for name in Settings.model_fields} <= rows
