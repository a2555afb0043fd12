"""``tumorseg submit PATH...``: send studies to the API as one job."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("paths", nargs="+", type=Path, help="PNG files or folders of them")
    parser.add_argument("--labels", type=Path, default=None, help="folder of label masks")
    parser.add_argument("--wait", action="store_true", help="show progress and a final table")
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--timeout", type=float, default=3600, help="--wait limit, seconds")
    parser.add_argument("--key", default=None, help="API key (TUMORSEG_API_KEY)")
    parser.add_argument("--name", default=None, help="what to call the job (at most 120 chars)")
    parser.add_argument(
        "--spacing",
        default=None,
        metavar="MM",
        help="the studies' pixel size in mm: S, or ROWS,COLUMNS (areas then in mm², cm)",
    )


def run(args: argparse.Namespace) -> int:
    """Submit, print the job id, and with ``--wait`` follow it to the end."""
    import sys

    from cli import client
    from config.settings import get_settings

    url = args.url or get_settings().api_url
    key = args.key or get_settings().api_key
    try:
        images = client.collect_images(args.paths)
        labels = client.select_labels(images, args.labels)
        job = client.submit(url, images, labels, key, name=args.name, spacing=args.spacing)
        print(job["id"])
        if not args.wait:
            return 0
        job = client.wait(url, job["id"], timeout=args.timeout, key=key)
    except client.ClientError as exc:
        print(f"tumorseg submit: {exc}", file=sys.stderr)
        return 2
    print(client.job_table(job))
    banner = client.untrained_banner(job)
    if banner:
        print(banner, file=sys.stderr)
    return client.exit_code(job)
