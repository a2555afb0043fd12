"""``tumorseg archive scan|report``: hospital-archive processing by hand.

``scan`` submits the archive studies that the current model has not segmented (the
nightly beat runs the same scan: the folders and every PACS; ``--source NAME`` one PACS
only); ``report`` prints a night's studies with metrics.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path


def _day_or_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date or time") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's options."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    scan = sub.add_parser("scan", help="submit new archive studies as one nightly job")
    scan.add_argument(
        "--root",
        type=Path,
        action="append",
        default=None,
        help="scan only this folder (inside a configured root); repeatable",
    )
    scan.add_argument(
        "--source",
        metavar="NAME",
        default=None,
        help="scan only the PACS endpoint NAME (TUMORSEG_PACS_ENDPOINTS), no folders",
    )
    scan.add_argument(
        "--since",
        type=_day_or_time,
        default=None,
        help="only files modified at or after this ISO date/time (local time when naive); "
        "for a PACS, studies from this date on",
    )
    scan.add_argument(
        "--dry-run", action="store_true", help="print what would be submitted; submit nothing"
    )
    scan.add_argument(
        "--reprocess-model",
        metavar="VERSION",
        default=None,
        help="also re-queue studies whose result is from VERSION, with the current model",
    )
    report = sub.add_parser("report", help="a night's archive studies with metrics and flags")
    report.add_argument(
        "--date", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: today)"
    )
    report.add_argument("--format", choices=["csv", "json"], default="csv")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; exit 2 when the scan cannot run."""
    from config.settings import get_settings
    from db.migrate import upgrade_to_head

    settings = get_settings()
    upgrade_to_head(settings.sqlalchemy_url)
    if args.action == "report":
        return _report(args)
    return _scan(args)


def _scan(args: argparse.Namespace) -> int:
    from archive.scan import ScanError, scan_archive
    from cli.tables import format_table
    from config.settings import get_settings
    from core.dispatch import Dispatcher

    settings = get_settings()
    dispatcher = None if args.dry_run else Dispatcher(settings)
    try:
        report = scan_archive(
            settings,
            roots=args.root,
            since=args.since,
            dry_run=args.dry_run,
            reprocess_model=args.reprocess_model,
            dispatcher=dispatcher,
            source=args.source,
        )
    except ScanError as exc:
        print(f"tumorseg archive scan: {exc}", file=sys.stderr)
        return 2
    finally:
        if dispatcher is not None:
            dispatcher.close()
    if report.locked:
        print("another archive scan is running: nothing submitted")
        return 1
    verb = "would submit" if report.dry_run else "submitted"
    job = f" as job {report.job_id}" if report.job_id is not None else ""
    print(f"{verb} {len(report.planned)} studies{job} for model {report.model_version}")
    if report.planned:
        rows = [(i.kind, i.content_hash[:12], i.reason, i.path) for i in report.planned]
        table = format_table(("kind", "content hash", "reason", "path"), rows)
        print("\n".join(f"  {line}" for line in table.splitlines()))
    print(f"already submitted before: {report.already_done}")
    for item in report.planned:
        if item.pacs is not None:
            print(f"  {item.path}: {item.pacs.suv.note}")
    for left_out in report.skipped:
        print(f"left out {left_out.path}: {left_out.reason}")
    for problem in report.problems:
        print(f"skipped {problem.path}: {problem.reason}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from archive.nightly_report import nightly_report, to_csv, to_json
    from config.settings import get_settings
    from db.session import session_scope

    settings = get_settings()
    zone = settings.archive_tzinfo
    day = args.date or datetime.now(zone).date()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            report = nightly_report(session, day, zone)
    except ValueError as exc:
        print(f"tumorseg archive report: {exc}", file=sys.stderr)
        return 2
    print(to_json(report) if args.format == "json" else to_csv(report), end="")
    if args.format == "json":
        print()
    return 0
