"""``tumorseg status JOB_ID``: show a job."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("job_id", type=int)
    parser.add_argument("--json", action="store_true", help="print the raw job JSON")
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--key", default=None, help="API key (TUMORSEG_API_KEY)")


def run(args: argparse.Namespace) -> int:
    """Print the job; exit 0 when it succeeded, 1 when not (yet), 2 on errors."""
    import json
    import sys

    from cli import client
    from config.settings import get_settings

    try:
        settings = get_settings()
        job = client.get_job(
            args.url or settings.api_url, args.job_id, args.key or settings.api_key
        )
    except client.ClientError as exc:
        print(f"tumorseg status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(job, indent=2) if args.json else client.job_table(job))
    banner = client.untrained_banner(job)
    if banner and not args.json:
        print(banner, file=sys.stderr)
    return client.exit_code(job)
