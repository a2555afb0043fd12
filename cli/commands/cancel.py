"""``tumorseg cancel JOB_ID``: cancel the studies of a job that have not started."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("job_id", type=int)
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--key", default=None, help="API key (TUMORSEG_API_KEY)")


def run(args: argparse.Namespace) -> int:
    """Cancel and print what the job holds now; 0 when done, 2 on errors (an unknown job)."""
    import sys

    from cli import client
    from config.settings import get_settings

    try:
        settings = get_settings()
        job = client.cancel(args.url or settings.api_url, args.job_id, args.key or settings.api_key)
    except client.ClientError as exc:
        print(f"tumorseg cancel: {exc}", file=sys.stderr)
        return 2
    cancelled = job["counts"].get("cancelled", 0)
    print(
        f"job {job['id']}: {job['status']}; {cancelled} of {job['total']} studies cancelled "
        f"(studies already running or finished are left as they are)"
    )
    return 0
