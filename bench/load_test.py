"""Load test: concurrent clients submit studies to one API and one worker on this machine.

Starts its own stack under a temporary folder (an embedded redis-server, a SQLite
database unless ``--database-url`` is given, ``tumorseg api`` and one ``tumorseg
worker``), creates one API key per client, lets the clients submit their share of the
studies as jobs (backing off on 429/503 as ``Retry-After`` says), waits for every job,
and accounts for every study in the database: succeeded, failed, missing, duplicated.

Usage::

    .venv/bin/python -m bench.load_test --clients 4 --studies 1000 --job-size 25

Prints a JSON report (also written to ``--out``); exits 1 if any study is lost or
duplicated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from cli.stack import Processes, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("load_test")
DATA = REPO_ROOT.parent / "shared" / "data" / "dmiai2023"
FINISHED = {"succeeded", "partially_failed", "failed", "cancelled"}


def _images(limit: int = 40) -> list[bytes]:
    folder = DATA / "patients" / "imgs"
    paths = sorted(folder.glob("*.png"))[:limit] or sorted(
        (REPO_ROOT / "samples" / "imgs").glob("*.png")
    )
    return [p.read_bytes() for p in paths]


def _create_keys(db_url: str, n: int) -> list[str]:
    from api.services.auth import create_key
    from db.migrate import upgrade_to_head
    from db.session import session_scope

    upgrade_to_head(db_url)
    with session_scope(db_url) as session:
        return [create_key(session, f"load-client-{i}", tenant=f"load{i}")[1] for i in range(n)]


def _submit(
    client: httpx.Client, files: list[Any], stats: dict[str, int], lock: threading.Lock
) -> int:
    while True:
        response = client.post("/v1/jobs", files=files)
        if response.status_code == 202:
            return int(response.json()["id"])
        if response.status_code in (429, 503):
            with lock:
                stats[str(response.status_code)] = stats.get(str(response.status_code), 0) + 1
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        raise RuntimeError(f"submission refused: {response.status_code} {response.text[:300]}")


def _client_run(
    url: str,
    key: str,
    index: int,
    count: int,
    job_size: int,
    images: list[bytes],
    stats: dict[str, int],
    lock: threading.Lock,
) -> list[tuple[int, float, int]]:
    """Submit ``count`` studies in jobs of ``job_size``; returns (job id, submitted at, n)."""
    jobs = []
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as client:
        for start in range(0, count, job_size):
            n = min(job_size, count - start)
            files = [
                (
                    "files",
                    (
                        f"c{index}_s{start + i:05d}.png",
                        images[(start + i) % len(images)],
                        "image/png",
                    ),
                )
                for i in range(n)
            ]
            jobs.append((_submit(client, files, stats, lock), time.monotonic(), n))
    return jobs


def _wait(
    url: str, key: str, jobs: list[tuple[int, float, int]], timeout: float
) -> dict[int, dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        while len(done) < len(jobs):
            for job_id, submitted, _n in jobs:
                if job_id in done:
                    continue
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in FINISHED:
                    job["latency"] = time.monotonic() - submitted
                    done[job_id] = job
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(jobs) - len(done)} jobs unfinished after {timeout:.0f}s")
            time.sleep(1.0)
    return done


def _account(db_url: str, job_ids: list[int]) -> dict[str, int]:
    from sqlalchemy import func, select

    from db.models import Result, Study
    from db.session import session_scope

    with session_scope(db_url) as session:
        studies = session.execute(
            select(Study.status, func.count())
            .where(Study.job_id.in_(job_ids))
            .group_by(Study.status)
        ).all()
        per_study = session.execute(
            select(Result.study_id, func.count())
            .join(Study, Study.id == Result.study_id)
            .where(Study.job_id.in_(job_ids))
            .group_by(Result.study_id)
        ).all()
    by_status = {str(s.value if hasattr(s, "value") else s): int(n) for s, n in studies}
    return {
        "studies_in_db": sum(by_status.values()),
        "succeeded": by_status.get("succeeded", 0),
        "failed": by_status.get("failed", 0),
        "unfinished": by_status.get("queued", 0) + by_status.get("running", 0),
        "studies_with_result": len(per_study),
        "duplicate_results": sum(int(n) - 1 for _, n in per_study if n > 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the load test; 0 when no study is lost or duplicated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--studies", type=int, default=1000, help="in total, split over the clients"
    )
    parser.add_argument("--job-size", type=int, default=25, help="studies per job")
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temp folder")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from core.broker import start_embedded_redis, stop_embedded_redis

    tmp = Path(tempfile.mkdtemp(prefix="tumorseg-load-"))
    db_url = args.database_url or f"sqlite:///{tmp / 'load.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = Processes(tmp)
    broker = start_embedded_redis(tmp / "redis")
    try:
        keys = _create_keys(db_url, args.clients + 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORSEG_")}
        env |= {
            "TUMORSEG_VAR_DIR": str(tmp),
            "TUMORSEG_DATABASE_URL": db_url,
            "TUMORSEG_REDIS_URL": broker,
        }
        cli = [sys.executable, "-m", "cli"]
        procs.start("api", [*cli, "api", "--port", str(port)], env)
        procs.start("worker", [*cli, "worker", "--concurrency", "1"], env)
        wait_ready(url, procs)
        images = _images()
        share = [
            args.studies // args.clients + (i < args.studies % args.clients)
            for i in range(args.clients)
        ]
        stats: dict[str, int] = {}
        lock = threading.Lock()
        started = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = [
                pool.submit(
                    _client_run, url, keys[i], i, share[i], args.job_size, images, stats, lock
                )
                for i in range(args.clients)
            ]
            per_client = [f.result() for f in futures]
        submitted_in = time.monotonic() - started
        logger.info("submitted %d studies in %.1fs; waiting", args.studies, submitted_in)
        jobs = [j for jobs in per_client for j in jobs]
        finished: dict[int, dict[str, Any]] = {}
        for i, client_jobs in enumerate(per_client):
            finished |= _wait(url, keys[i], client_jobs, args.timeout)
        total = time.monotonic() - started
        account = _account(db_url, [j for j, _, _ in jobs])
        latencies = sorted(j["latency"] for j in finished.values())
        report = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "clients": args.clients,
            "studies": args.studies,
            "jobs": len(jobs),
            "job_size": args.job_size,
            "database": db_url.split(":")[0],
            "workers": 1,
            "submit_seconds": round(submitted_in, 1),
            "total_seconds": round(total, 1),
            "studies_per_second": round(args.studies / total, 2),
            "job_latency_p50_s": round(statistics.median(latencies), 1),
            "job_latency_max_s": round(latencies[-1], 1),
            "refused_429": stats.get("429", 0),
            "refused_503": stats.get("503", 0),
            **account,
            "lost": args.studies
            - account["studies_in_db"]
            + account["unfinished"]
            + (account["succeeded"] - account["studies_with_result"]),
        }
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        ok = report["lost"] == 0 and account["duplicate_results"] == 0
        ok = ok and account["succeeded"] + account["failed"] == args.studies
        return 0 if ok else 1
    finally:
        procs.stop_all()
        stop_embedded_redis(tmp / "redis")


if __name__ == "__main__":
    sys.exit(main())
