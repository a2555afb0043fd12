"""End-to-end pipeline benchmark: API + Redis + worker(s) + SQLite on this machine.

Starts an embedded Redis, a fresh SQLite database, the API and one worker process as
real subprocesses, warms the worker up, submits N development studies over HTTP as one
job, polls `GET /v1/jobs/{id}` until it finishes, and reports:

- studies/s end to end (from the POST to the job's end);
- the model's own time: the same studies through the same predictor in this process,
  measured in the same run before the service starts;
- overhead = 1 - model time / wall time;
- p50/p95 latency of `GET /v1/jobs/{id}` during the run;
- peak RSS of the worker (all its processes) and of the API;
- where the worker's time went: its chunk reports' phases (claim, decode, predict,
  findings, store) for the timed job, summed over chunks and processes.

Usage: .venv/bin/python -m bench.pipeline [--n 200] [--concurrency 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.inference import DATA, machine, pick
from bench.memory import PeakRSS
from cli.stack import Processes, free_port, wait_ready


def model_time(pngs: list[bytes], batch_size: int, warm: int) -> tuple[float, str, int]:
    """Seconds the released predictor needs for these studies, decoded beforehand, after a
    warm-up pass over the first `warm` of them, in the runtime the worker picks at the
    defaults (`auto`); its version, and the batch size it ran (0 resolves to the device's
    best)."""
    from model.predictor import Predictor
    from model.preprocessing import decode_image

    cache = Path(tempfile.gettempdir()) / "tumorseg-bench-openvino"
    pred = Predictor.from_artifact(
        None, device="auto", batch_size=batch_size, runtime="auto", cache_dir=cache
    )
    images = [decode_image(p) for p in pngs]
    pred.masks(images[: max(warm, 1)])  # warm-up: each new input shape costs a first time
    start = time.perf_counter()
    pred.masks(images)
    return time.perf_counter() - start, pred.version, pred.inference.batch_size


REPORT_START = '{"model_version"'  # a chunk report in the worker's log (JSON)


def chunk_phases(worker_log: Path, offset: int, n: int, wait_s: float = 5.0) -> dict:
    """Where the worker's time went: the chunk reports it logged after byte `offset`
    (`chunk [ids]: {JSON report}`), summed per phase over chunks and pool processes, so that
    the sums can exceed the wall time. Waits up to `wait_s` for the reports of all `n`
    studies: a job ends at its last commit, a moment before that chunk is logged."""
    deadline = time.monotonic() + wait_s
    while True:
        with worker_log.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        reports = [
            json.loads(line[line.index(REPORT_START) :])
            for line in lines
            if "worker.segmentation: chunk [" in line and REPORT_START in line
        ]
        studies = sum(
            len(r["succeeded"]) + len(r["failed"]) + len(r["skipped"]) + len(r.get("rejected", []))
            for r in reports
        )
        if studies >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    phases: dict[str, float] = {}
    for r in reports:
        for name, seconds in r["phases"].items():
            phases[name] = phases.get(name, 0.0) + seconds
    return {
        "chunks": len(reports),
        "chunk_studies": studies,
        "chunk_seconds_s": sum(r["seconds"] for r in reports),
        "chunk_phases_s": phases,
    }


def _stage(t0: float, message: str) -> None:
    """Progress on stderr: a run cut short by a time limit still shows how far it got."""
    print(f"[pipeline +{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)


def _auth_headers(env: dict[str, str]) -> dict[str, str]:
    """Create an API key when the service requires them (its last output line)."""
    from cli.main import COMMANDS

    if "keys" not in COMMANDS:
        return {}
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--name", "bench", "--admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}


class StatusPoller(threading.Thread):
    """Polls one job's status as a client would, timing every request: the status alone
    (`?studies=false`, as `tumorseg submit --wait` polls), or with `full` the whole job
    with its list of studies."""

    def __init__(
        self, url: str, headers: dict[str, str], interval: float = 0.1, full: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.interval = url, headers, interval
        self.params = None if full else {"studies": "false"}
        self.latencies_ms: list[float] = []
        self.job: dict = {}
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self.done.is_set():
                t0 = time.perf_counter()
                r = client.get(self.url, params=self.params)
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                self.job = r.json()
                if self.job.get("status") in {
                    "succeeded",
                    "partially_failed",
                    "failed",
                    "cancelled",
                }:
                    self.done.set()
                    return
                time.sleep(self.interval)


def run(
    n: int,
    concurrency: int,
    chunk_size: int,
    batch_size: int,
    data: Path = DATA,
    full_status: bool = False,
    warm: int | None = None,
) -> dict:
    """One end-to-end run. `warm` studies (default: all n) go through the model alone and
    through the service once before the timed job, so that both are measured in the steady
    state of a long-running worker (CPU kernels for each new input shape are made the
    first time it is seen); `warm=2` measures a cold worker."""
    began = time.perf_counter()
    warm = n if warm is None else warm
    n_warm_job = max(warm, 2 * concurrency)  # every worker process sees the warm-up job
    files = pick(n, data)
    pngs = [f.image.read_bytes() for f in files]
    model_s, version, resolved_batch = model_time(pngs, batch_size, warm)
    _stage(began, f"model alone: {n} studies in {model_s:.2f} s; starting the service")

    from core.broker import start_embedded_redis, stop_embedded_redis

    var = Path(tempfile.mkdtemp(prefix="tumorseg-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = Processes(var)
    try:
        broker = start_embedded_redis(var / "redis")
        env = {
            **os.environ,
            "TUMORSEG_VAR_DIR": str(var),
            "TUMORSEG_DATABASE_URL": f"sqlite:///{var}/bench.db",
            "TUMORSEG_REDIS_URL": broker,
            "TUMORSEG_API_URL": url,
            "TUMORSEG_CHUNK_SIZE": str(chunk_size),
            "TUMORSEG_BATCH_SIZE": str(batch_size),
        }
        cli = [sys.executable, "-m", "cli"]
        api = procs.start("api", [*cli, "api", "--port", str(port)], env)
        worker = procs.start("worker", [*cli, "worker", "--concurrency", str(concurrency)], env)
        wait_ready(url, procs)
        _stage(began, f"API up; logs in {var}")
        headers = _auth_headers(env)
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            warm_job = client.post(
                "/v1/jobs",
                files=[
                    ("files", (f"warm{i}.png", pngs[i % n], "image/png")) for i in range(n_warm_job)
                ],
            )
            warm_job.raise_for_status()
            poller = StatusPoller(f"{url}/v1/jobs/{warm_job.json()['id']}", headers, 0.2)
            poller.start()
            poller.done.wait(600)
            _stage(began, f"warm-up job of {n_warm_job} {poller.job.get('status')}")
            # the worker's group is summed over all of /proc: sampled 4 times a second
            # (every 20 ms it took a tenth of a core from the 2 that the model shares)
            with (
                PeakRSS(worker.pid, interval=0.25, group=True) as worker_mem,
                PeakRSS(api.pid, interval=0.1) as api_mem,
            ):
                log_offset = (var / "worker.log").stat().st_size
                t0 = time.perf_counter()
                r = client.post(
                    "/v1/jobs",
                    files=[
                        ("files", (f.image.name, p, "image/png"))
                        for f, p in zip(files, pngs, strict=True)
                    ],
                )
                r.raise_for_status()
                submit_s = time.perf_counter() - t0
                _stage(began, f"job of {n} studies submitted in {submit_s:.2f} s")
                poller = StatusPoller(
                    f"{url}/v1/jobs/{r.json()['id']}", headers, 0.1, full=full_status
                )
                poller.start()
                if not poller.done.wait(1800):
                    raise RuntimeError("the job did not finish within 30 minutes")
                wall = time.perf_counter() - t0
                _stage(began, f"job {poller.job.get('status')} after {wall:.2f} s")
        job = poller.job
        where = chunk_phases(var / "worker.log", log_offset, n)
    finally:
        procs.stop_all()
        stop_embedded_redis(var / "redis")
    lat = np.array(poller.latencies_ms)
    return {
        "machine": machine(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "model_version": version,
        "n_studies": n,
        "worker_concurrency": concurrency,
        "chunk_size": chunk_size,
        "warm_studies": warm,
        "batch_size": resolved_batch,
        "job_status": job.get("status"),
        "counts": job.get("counts"),
        "wall_s": wall,
        "submit_s": submit_s,
        "model_s": model_s,
        "studies_per_s": n / wall,
        "model_studies_per_s": n / model_s,
        "overhead": 1.0 - model_s / wall,
        "status_p50_ms": float(np.percentile(lat, 50)),
        "status_p95_ms": float(np.percentile(lat, 95)),
        "status_polls": len(lat),
        "status_form": "full job" if full_status else "status alone (?studies=false)",
        "worker_peak_rss_mb": worker_mem.peak / 2**20,
        "api_peak_rss_mb": api_mem.peak / 2**20,
        **where,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1],
        help="worker processes; several values run one after the other",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        nargs="+",
        default=None,
        help="studies per task (default: the settings'); several values run one after the other",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--data", type=Path, default=DATA, help="folder in the DM i AI layout")
    parser.add_argument(
        "--full-status",
        action="store_true",
        help="poll the whole job with its studies, not the status alone",
    )
    parser.add_argument(
        "--warm-studies",
        type=int,
        default=None,
        help="studies run once through the model and the service before timing (default:"
        " all N, a long-running worker's steady state; 2: a cold worker)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from config.settings import get_settings

    settings = get_settings()
    chunks = args.chunk_size or [settings.chunk_size]
    batch = args.batch_size or settings.batch_size
    results = [
        run(args.n, c, chunk, batch, args.data, args.full_status, args.warm_studies)
        for c in args.concurrency
        for chunk in chunks
    ]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return
    print(
        f"machine: {results[0]['machine']}\nmodel: {results[0]['model_version']}, "
        f"{args.n} studies, batch {results[0]['batch_size']}, "
        f"polling the {results[0]['status_form']}, "
        f"{results[0]['warm_studies']} studies through model and service first\n"
    )
    print(
        "| workers | chunk | job | studies/s | model studies/s | overhead | "
        "status p50 ms | status p95 ms | worker peak RSS MB | API peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['worker_concurrency']} | {r['chunk_size']} | "
            f"{r['job_status']} | "
            f"{r['studies_per_s']:.2f} | "
            f"{r['model_studies_per_s']:.2f} | {r['overhead']:.1%} | {r['status_p50_ms']:.1f} | "
            f"{r['status_p95_ms']:.1f} | {r['worker_peak_rss_mb']:.0f} | "
            f"{r['api_peak_rss_mb']:.0f} |"
        )
    for r in results:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["chunk_phases_s"].items())
        print(
            f"\n{r['worker_concurrency']} worker process(es), chunk {r['chunk_size']}: "
            f"{r['chunks']} chunks, "
            f"{r['chunk_seconds_s']:.2f} s in chunks (summed over processes): {phases}"
        )


if __name__ == "__main__":
    main()
