"""``tumorseg status JOB_ID``: show a job."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("job_id", type=int)
    parser.add_argument("--json", action="store_true", help="print the raw job JSON")
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")


def run(args: argparse.Namespace) -> int:
    """Print the job; exit 0 when it succeeded, 1 when not (yet), 2 on errors."""
    import json
    import sys

    from cli import client
    from config.settings import get_settings

    try:
        job = client.get_job(args.url or get_settings().api_url, args.job_id)
    except client.ClientError as exc:
        print(f"tumorseg status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(job, indent=2) if args.json else client.job_table(job))
    banner = client.untrained_banner(job)
    if banner and not args.json:
        print(banner, file=sys.stderr)
    return client.exit_code(job)
