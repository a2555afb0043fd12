"""``tumorseg jobs``: list the jobs the key may see, newest first."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("--limit", type=int, default=20, help="jobs to show (1-200, default 20)")
    parser.add_argument("--offset", type=int, default=0, help="newest jobs to skip first")
    parser.add_argument("--json", action="store_true", help="print the raw page JSON")
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--key", default=None, help="API key (TUMORSEG_API_KEY)")


def run(args: argparse.Namespace) -> int:
    """Print a page of jobs (id, name, status, progress, studies, model, created); 0 when
    listed, 2 on errors."""
    import json
    import sys

    from cli import client
    from config.settings import get_settings

    try:
        settings = get_settings()
        page = client.list_jobs(
            args.url or settings.api_url, args.key or settings.api_key, args.limit, args.offset
        )
    except client.ClientError as exc:
        print(f"tumorseg jobs: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    print(client.jobs_table(page))
    shown = len(page["items"])
    print(f"\n{shown} of {page['total']} jobs, newest first (--offset {args.offset})")
    return 0
