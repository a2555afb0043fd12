"""``tumorseg demo``: the whole service on one machine, end to end, on the bundled samples.

Starts an embedded Redis and a fresh SQLite database under ``var/``, the API and one
worker as real subprocesses, submits ``samples/imgs`` (with ``samples/labels``) over
HTTP, follows the job, prints its tables (metrics, then biomarkers), exports masks,
overlays, ``results.csv`` and ``lesions.csv`` to ``out/`` like ``tumorseg export``, and stops
everything it started, also on Ctrl-C or failure. No beat runs: the worker's own recovery
passes (``worker/recovery.py``) bring back what a crash or a Redis restart loses.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from cli.stack import Processes, free_port, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "samples", help="folder")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the export goes")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the whole job")


def _demo_key(db_url: str) -> str:
    """Migrate the demo database and create the demo's own API key in it."""
    from api.services.auth import create_key
    from db.migrate import upgrade_to_head
    from db.session import session_scope

    upgrade_to_head(db_url)
    with session_scope(db_url) as session:
        return create_key(session, "demo")[1]


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every sample study succeeded."""
    from cli import client
    from config.settings import get_settings
    from core.broker import start_embedded_redis, stop_embedded_redis

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
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    redis_dir = var_dir / "demo-redis"
    procs = Processes(log_dir)
    # SIGTERM (e.g. from a CI runner) stops the demo like Ctrl-C: through the finally
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        broker = start_embedded_redis(redis_dir)
        key = _demo_key(f"sqlite:///{db_path}")
        env = {
            **os.environ,
            "TUMORSEG_VAR_DIR": str(var_dir),
            "TUMORSEG_DATABASE_URL": f"sqlite:///{db_path}",
            "TUMORSEG_REDIS_URL": broker,
            "TUMORSEG_API_URL": url,
            "TUMORSEG_API_KEY": key,
        }
        cli = [sys.executable, "-m", "cli"]
        print(f"demo: broker {broker}, database {db_path}, logs in {log_dir}")
        procs.start("api", [*cli, "api", "--port", str(port)], env)
        procs.start("worker", [*cli, "worker", "--concurrency", "1"], env)
        wait_ready(url, procs)
        print(f"demo: API ready at {url} (OpenAPI at {url}/docs); submitting {len(images)} "
              f"studies with {len(labels)} labels")  # fmt: skip
        job = client.submit(url, images, labels, key)
        job = client.wait(url, job["id"], args.timeout, key=key, check=procs.check_alive)
        print(client.job_table(job))
        print("\nMIP biomarkers (docs/BIOMARKERS.md; cm need the pixel spacing):")
        print(client.biomarker_table(job))
        written = client.export(url, job["id"], args.out, key)
        print(f"demo: wrote {len(written)} files to {args.out.resolve()} (masks, overlays, "
              "results.csv and lesions.csv)")  # fmt: skip
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
