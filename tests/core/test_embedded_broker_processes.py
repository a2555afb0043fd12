"""The embedded Redis with real processes: it ends with the last process that uses it,
whatever order the API and the worker stop in, and ``tumorseg stop`` ends one that a
killed process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack import Processes, free_port, wait_ready
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "cli"]


@pytest.fixture
def var_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def env(var_dir: Path) -> dict[str, str]:
    """The service on this machine as the README starts it: no TUMORSEG_REDIS_URL."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")},
        "TUMORSEG_VAR_DIR": str(var_dir),
        "TUMORSEG_MODEL_MEMBERS": "1",  # two cores: the ensemble's first network
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


def _server_pid(var_dir: Path) -> int:
    registry = json.loads((var_dir / "redis.rdb.settings").read_text())
    return int(Path(registry["pidfile"]).read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child of nobody here, but a zombie counts as gone
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _stop(procs: Processes, name: str, sig: int = signal.SIGTERM) -> None:
    """Stop one of the started processes (its whole process group) and wait for it."""
    for started, proc, log in procs.running:
        if started == name:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)
            log.close()
            procs.running.remove((started, proc, log))
            return
    raise AssertionError(f"no {name} started")


def _api(procs: Processes, env: dict[str, str]) -> str:
    port = free_port()
    procs.start("api", [*CLI, "api", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, procs, timeout=120)
    return url


def _worker(procs: Processes, env: dict[str, str], tmp_path: Path) -> None:
    procs.start("worker", [*CLI, "worker", "--concurrency", "1"], env)
    deadline = time.monotonic() + 180
    while b" ready." not in (tmp_path / "worker.log").read_bytes():
        procs.check_alive()
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
        time.sleep(0.3)


def _tumorseg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("order", [("worker", "api"), ("api", "worker")])
def test_the_server_ends_with_the_last_process_that_uses_it(
    procs: Processes,
    env: dict[str, str],
    var_dir: Path,
    tmp_path: Path,
    order: tuple[str, str],
) -> None:
    _api(procs, env)
    _worker(procs, env, tmp_path)
    server = _server_pid(var_dir)
    first, last = order
    _stop(procs, first)  # the other one still uses the server
    time.sleep(1)
    assert _alive(server)
    assert (var_dir / "redis.rdb.settings").exists()
    _stop(procs, last)  # the last user: the server goes with it
    assert _gone_within(server, 20), (tmp_path / f"{last}.log").read_text()[-3000:]
    assert not (var_dir / "redis.rdb.settings").exists()


def test_tumorseg_stop_ends_a_server_whose_last_user_was_killed(
    procs: Processes, env: dict[str, str], var_dir: Path
) -> None:
    _api(procs, env)
    server = _server_pid(var_dir)
    api_pid = procs.running[0][1].pid
    busy = _tumorseg(env, "stop")  # the API still uses it: refused, naming the API
    assert busy.returncode == 1
    assert str(api_pid) in busy.stderr
    assert _alive(server)

    _stop(procs, "api", signal.SIGKILL)  # no chance to sign out
    time.sleep(1)
    assert _alive(server)
    done = _tumorseg(env, "stop")
    assert done.returncode == 0, done.stderr
    assert "stopped the embedded redis-server" in done.stdout
    assert _gone_within(server, 20)
    again = _tumorseg(env, "stop")
    assert again.returncode == 0
    assert "no embedded redis-server is running" in again.stdout
