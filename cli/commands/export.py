"""``tumorseg export JOB --out DIR``: a job's masks, overlays and tables, over HTTP."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    parser.add_argument("job_id", type=int)
    parser.add_argument("--out", type=Path, required=True, help="folder to write to")
    parser.add_argument("--url", default=None, help="API base URL (TUMORSEG_API_URL)")
    parser.add_argument("--key", default=None, help="API key (TUMORSEG_API_KEY)")


def run(args: argparse.Namespace) -> int:
    """Write results.csv, lesions.csv and each succeeded study's mask and overlay; exit 0
    when written, 2 on errors."""
    import sys

    from cli import client
    from config.settings import get_settings

    try:
        settings = get_settings()
        written = client.export(
            args.url or settings.api_url, args.job_id, args.out, args.key or settings.api_key
        )
    except (client.ClientError, OSError) as exc:
        print(f"tumorseg export: {exc}", file=sys.stderr)
        return 2
    print(f"tumorseg export: wrote {len(written)} files to {args.out.resolve()}")
    return 0
