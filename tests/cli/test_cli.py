"""The ``tumorseg`` command: dispatch, exit codes, client helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli import client
from cli.main import COMMANDS, build_parser, main
from cli.stack import free_port
from tests.child_processes import tied_to_tests
from tests.conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0
    for name in ("api", "worker", "submit", "status", "demo", "db"):
        assert name in COMMANDS
        assert name in out.stdout


def test_each_command_parses_its_documented_arguments() -> None:
    assert build_parser("api").parse_args(["api", "--host", "0.0.0.0", "--port", "9"]).port == 9
    worker = build_parser("worker").parse_args(["worker", "--queues", "a,b", "--concurrency", "2"])
    assert worker.queues == "a,b"
    assert worker.concurrency == 2
    submit = build_parser("submit").parse_args(["submit", "x", "y", "--labels", "l", "--wait"])
    assert submit.paths == [Path("x"), Path("y")]
    assert submit.wait
    assert build_parser("status").parse_args(["status", "7", "--json"]).json
    assert build_parser("db").parse_args(["db", "upgrade"]).action == "upgrade"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nope"])


def test_db_upgrade_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from config.settings import get_settings

    monkeypatch.setenv("TUMORSEG_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 0
        assert "is at revision" in capsys.readouterr().out
        assert (tmp_path / "tumorseg.db").exists()
    finally:
        get_settings.cache_clear()


def test_export_against_an_unreachable_api_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "3", "--out", str(tmp_path / "x"), "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach the API" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_status_against_an_unreachable_api_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "1", "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the API" in capsys.readouterr().err


def test_invalid_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from config.settings import get_settings

    monkeypatch.setenv("TUMORSEG_TASK_TIME_LIMIT", "5000")
    get_settings.cache_clear()
    try:
        assert main(["status", "1"]) == 2
        assert "VISIBILITY_TIMEOUT" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()


def test_client_collects_images_and_matching_labels() -> None:
    images = client.collect_images([SAMPLES / "imgs"])
    assert images
    assert all(p.suffix == ".png" for p in images)
    labels = client.select_labels(images, SAMPLES / "labels")
    assert {p.name for p in labels} == {p.name for p in (SAMPLES / "labels").glob("*.png")}
    with pytest.raises(client.ClientError):
        client.collect_images([SAMPLES / "missing"])


def test_job_table_and_untrained_banner() -> None:
    job = {
        "id": 3, "status": "succeeded", "counts": {"succeeded": 1}, "model_version": "v",
        "warning": "MODEL v IS UNTRAINED", "timings": {"total_seconds": 1.5},
        "aggregates": {"mean_dice": 0.5, "labelled_studies": 1},
        "studies": [{"id": 1, "filename": "p.png", "status": "succeeded", "error": None,
                     "metrics": {"tumor_pixels": 10, "lesions": 2, "dice": 0.5}}],
    }  # fmt: skip
    table = client.job_table(job)
    assert "p.png" in table
    assert "0.500" in table
    assert "job 3: succeeded" in table
    assert "UNTRAINED" in (client.untrained_banner(job) or "")
    assert client.exit_code(job) == 0
    assert client.exit_code({**job, "status": "failed"}) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--crop-size", "100"], "multiple of 16"),
        (["--workers", "-1"], "0 or more"),
        (["--dropout", "1"], "--dropout must be in [0, 1)"),
        (["--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
        (["--p-control", "0.6"], "--p-control must be in [0, 0.5]"),
    ],
)
def test_train_refuses_bad_options_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().out


def test_biomarker_table_lists_succeeded_studies_with_their_values() -> None:
    markers = {
        "tumor_area_px": 120, "tumor_area_cm2": 1.92, "lesion_count": 2, "sdmax_px": 50.0,
        "sdmax_cm": 20.0, "sdmax_per_height": 0.0625, "body_height_px": 800,
        "body_width_px": 300, "body_height_cm": 320.0, "body_width_cm": 120.0,
    }  # fmt: skip
    job = {
        "studies": [
            {"id": 1, "filename": "a.png", "biomarkers": markers},
            {"id": 2, "filename": "b.png", "biomarkers": None},  # failed: no row
            {"id": 3, "filename": "c.png", "biomarkers": {**markers, "tumor_area_cm2": None,
                                                          "sdmax_cm": None}},
        ]
    }  # fmt: skip
    lines = client.biomarker_table(job).splitlines()
    assert lines[0].split()[:3] == ["study", "file", "tumor"]
    assert lines[1].split() == ["1", "a.png", "120", "1.9", "2", "50.0", "20.0", "0.062", "800x300"]
    assert lines[2].split() == ["3", "c.png", "120", "-", "2", "50.0", "-", "0.062", "800x300"]
    assert len(lines) == 3


def test_the_api_logs_where_the_viewer_is_at_start_up(tmp_path: Path, redis_base_url: str) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")},
        "TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "TUMORSEG_REDIS_URL": redis_base_url,
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            tied_to_tests([sys.executable, "-m", "cli", "api", "--port", str(port)]),
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Application startup complete" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"web viewer: http://127.0.0.1:{port}/ui" in log.read_text()
        root = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
        assert root.headers["location"] == "/ui"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
