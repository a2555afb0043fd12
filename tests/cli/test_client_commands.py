"""The client commands against the real API: submit with a name and a spacing, jobs,
cancel, status into a closed pipe, and the tables they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from cli import client
from tests.cli.test_model_commands import tumorseg
from tests.conftest import SAMPLE_IMGS, bearer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = SAMPLE_IMGS / "patient_000.png"


def _client_env(live_api: tuple[str, str]) -> dict[str, str]:
    url, key = live_api
    return {"TUMORSEG_API_URL": url, "TUMORSEG_API_KEY": key}


def test_submit_names_a_job_with_its_spacing_and_jobs_lists_it_first(
    live_api: tuple[str, str],
) -> None:
    env = _client_env(live_api)
    first = tumorseg("submit", str(SAMPLE), "--name", "first run", env=env)
    assert first.returncode == 0, first.stderr
    second = tumorseg("submit", str(SAMPLE), "--name", "ward 3", "--spacing", "4,3.5", env=env)
    assert second.returncode == 0, second.stderr
    job_id = int(second.stdout.split()[0])
    shown = json.loads(tumorseg("status", str(job_id), "--json", env=env).stdout)
    assert shown["name"] == "ward 3"
    assert shown["studies"][0]["spacing_mm"] == [4.0, 3.5]

    listing = tumorseg("jobs", "--limit", "2", env=env)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split()[:4] == ["job", "name", "status", "progress"]
    assert [r.split("  ")[0] for r in rows[:2]] == [str(job_id), str(int(first.stdout))]
    assert "ward 3" in rows[0]
    assert "first run" in rows[1]
    assert "of" in rows[-1]  # how many there are in all


def test_a_bad_spacing_is_refused_naming_the_expected_form(live_api: tuple[str, str]) -> None:
    done = tumorseg("submit", str(SAMPLE), "--spacing", "wide", env=_client_env(live_api))
    assert done.returncode == 2
    assert "ROWS,COLUMNS" in done.stderr


def test_cancel_cancels_the_queued_studies(live_api: tuple[str, str]) -> None:
    env = _client_env(live_api)
    job_id = tumorseg("submit", str(SAMPLE), str(SAMPLE), env=env).stdout.split()[0]
    done = tumorseg("cancel", job_id, env=env)
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}: cancelled; 2 of 2 studies cancelled" in done.stdout
    url, key = live_api
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(key)).json()
    assert job["counts"]["cancelled"] == 2
    missing = tumorseg("cancel", "2147483000", env=env)
    assert missing.returncode == 2
    assert "not found" in missing.stderr


def test_status_into_a_closed_pipe_ends_without_a_traceback(live_api: tuple[str, str]) -> None:
    """`tumorseg status 1 | head`: the reader is gone before the table is written."""
    env = _client_env(live_api)
    job_id = tumorseg("submit", str(SAMPLE), str(SAMPLE), env=env).stdout.split()[0]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away: every write to the pipe fails
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cli", "status", job_id],
            cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, **env},
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
    assert done.stderr == ""
    assert done.returncode == 128 + 13  # as if SIGPIPE had ended it


def test_version() -> None:
    done = tumorseg("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "tumorseg 0.1.0"


def test_keys_list_has_a_header(tmp_path: Path) -> None:
    env = {"TUMORSEG_DATABASE_URL": f"sqlite:///{tmp_path / 'keys.db'}"}
    created = tumorseg("keys", "create", "--name", "lab pc", "--tenant", "lab", env=env)
    assert created.returncode == 0, created.stderr
    header, row = tumorseg("keys", "list", env=env).stdout.splitlines()
    assert header.split() == ["id", "prefix", "name", "tenant", "role", "state"]
    assert row.split()[0] == "1"
    assert row.split()[2:] == ["lab", "pc", "lab", "client", "active"]


def test_job_table_shows_a_failure_reason_whole() -> None:
    reason = (
        "study.png is not a usable image: the PNG stream ends before its pixel data does "
        "(truncated upload?)"
    )
    job = {
        "id": 4, "name": "night", "status": "failed", "counts": {"failed": 1},
        "model_version": None, "timings": {"total_seconds": None}, "aggregates": {},
        "studies": [{"id": 9, "filename": "study.png", "status": "failed", "error": reason,
                     "metrics": None}],
    }  # fmt: skip
    header, row, _, summary = client.job_table(job).splitlines()
    assert header.split() == ["study", "file", "status", "tumor", "px", "lesions", "dice", "error"]
    assert row.endswith(reason)  # not cut at 60 characters
    assert summary.startswith("job 4 (night): failed")
