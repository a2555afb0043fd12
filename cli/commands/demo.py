"""``tumorseg demo``: the whole service on one machine, end to end, on the bundled samples.

Starts an embedded Redis and a fresh SQLite database under ``var/``, the API and one
worker as real subprocesses, submits ``samples/imgs`` (with ``samples/labels``) over
HTTP, follows the job, prints a table, writes masks and overlays to ``out/``, and stops
everything it started, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples", help="folder")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where masks go")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole job")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Processes:
    """Subprocesses started by the demo, stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.running.append((name, proc, log))
        return proc

    def check_alive(self) -> None:
        for name, proc, _log in self.running:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the {name} exited with code {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.running):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc, log in reversed(self.running):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print(f"demo: the {name} did not stop; killing it", file=sys.stderr)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
        self.running.clear()


def _wait_ready(url: str, procs: _Processes, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} was not ready within {timeout:.0f}s")


def _download(url: str, job: dict[str, object], out: Path) -> list[Path]:
    import httpx

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for study in job["studies"]:  # type: ignore[attr-defined]
        if study["status"] != "succeeded":
            continue
        stem = Path(study["filename"]).stem
        for kind in ("mask", "overlay"):
            response = httpx.get(f"{url}/v1/studies/{study['id']}/{kind}.png", timeout=30)
            response.raise_for_status()
            path = out / f"{stem}_{kind}.png"
            path.write_bytes(response.content)
            written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every sample study succeeded."""
    from cli import client
    from config.embedded import start_embedded_redis, stop_embedded_redis
    from config.settings import get_settings

    settings = get_settings()
    var_dir = settings.var_dir.resolve()
    log_dir = var_dir / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    db_path = var_dir / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)

    images = client.collect_images([args.samples / "imgs"])
    labels_dir = args.samples / "labels"
    labels = client.select_labels(images, labels_dir if labels_dir.is_dir() else None)
    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}"
    redis_dir = var_dir / "demo-redis"
    procs = _Processes(log_dir)
    # SIGTERM (e.g. from a CI runner) stops the demo like Ctrl-C: through the finally
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        broker = start_embedded_redis(redis_dir)
        env = {
            **os.environ,
            "TUMORSEG_VAR_DIR": str(var_dir),
            "TUMORSEG_DATABASE_URL": f"sqlite:///{db_path}",
            "TUMORSEG_REDIS_URL": broker,
            "TUMORSEG_API_URL": url,
        }
        cli = [sys.executable, "-m", "cli"]
        print(f"demo: broker {broker}, database {db_path}, logs in {log_dir}")
        procs.start("api", [*cli, "api", "--port", str(port)], env)
        procs.start("worker", [*cli, "worker", "--concurrency", "1"], env)
        _wait_ready(url, procs)
        print(f"demo: API ready at {url} (OpenAPI at {url}/docs); submitting {len(images)} "
              f"studies with {len(labels)} labels")  # fmt: skip
        job = client.submit(url, images, labels)
        job = _follow(url, job["id"], procs, args.timeout)
        print(client.job_table(job))
        written = _download(url, job, args.out)
        print(f"demo: wrote {len(written)} files to {args.out.resolve()}")
        banner = client.untrained_banner(job)
        if banner:
            print(banner, file=sys.stderr)
        return client.exit_code(job)
    except (client.ClientError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        stop_embedded_redis(redis_dir)


def _follow(url: str, job_id: int, procs: _Processes, timeout: float) -> dict[str, object]:
    """Like ``client.wait`` but also notices a dead API or worker."""
    from tqdm import tqdm

    from cli import client

    deadline = time.monotonic() + timeout
    job = client.get_job(url, job_id)
    with tqdm(total=job["total"], desc=f"job {job_id}", unit="study", file=sys.stderr) as bar:
        while job["status"] not in client.FINISHED:
            procs.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish within {timeout:.0f}s")
            time.sleep(0.5)
            job = client.get_job(url, job_id)
            bar.update(job["total"] - job["counts"]["queued"] - job["counts"]["running"] - bar.n)
            bar.set_postfix_str(job["status"])
    return job
