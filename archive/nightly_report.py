"""The nightly report: one night's archive studies with metrics and flags.

"The night of D" is every archive job created on the calendar day D in
``archive_timezone`` (the machine's zone when unset): the 02:00 scan of D and any
manual scan that day. Shared by ``tumorseg archive report`` and
``GET /v1/reports/nightly``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy.orm import Session

from db.models import UNFINISHED_STUDY, StudyStatus
from db.repositories import archive as archive_repo
from db.repositories import studies as studies_repo

#: The days a report can be made for: from the Unix epoch (no archive job is older) to the
#: last whose end, the next midnight, Python's dates still hold in any time zone.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 12, 30)

#: Columns of the CSV form, in order.
COLUMNS: tuple[str, ...] = (
    "study_id",
    "job_id",
    "path",
    "kind",
    "content_hash",
    "status",
    "flags",
    "model_version",
    "lesions",
    "largest_lesion_px",
    "tumor_pixels",
    "tumor_fraction",
    "uptake_max",
    "error",
)


#: The fields of a report row that come from ``db.repositories.studies.study_row``.
ROW_FROM_STUDY: tuple[str, ...] = (
    "study_id",
    "job_id",
    "status",
    "lesions",
    "largest_lesion_px",
    "tumor_pixels",
    "tumor_fraction",
    "uptake_max",
    "error",
)


@dataclass(frozen=True)
class ReportRow:
    """One archive study of the night."""

    study_id: int
    job_id: int
    path: str
    kind: str
    content_hash: str
    status: str
    flags: list[str]
    model_version: str | None
    lesions: int | None
    largest_lesion_px: int | None
    tumor_pixels: int | None
    tumor_fraction: float | None
    uptake_max: float | None
    error: str | None


@dataclass
class NightlyReport:
    """The studies of one night and totals over them."""

    date: str
    start: str
    end: str
    rows: list[ReportRow] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """Totals: studies, per outcome, with lesions, and the largest lesion."""
        largest = max(self.rows, key=lambda r: r.largest_lesion_px or 0, default=None)
        return {
            "studies": len(self.rows),
            "succeeded": sum(r.status == StudyStatus.SUCCEEDED for r in self.rows),
            "failed": sum("failed" in r.flags for r in self.rows),
            "unfinished": sum("unfinished" in r.flags for r in self.rows),
            "with_lesions": sum("lesions" in r.flags for r in self.rows),
            "largest_lesion_px": largest.largest_lesion_px if largest else None,
            "largest_lesion_study": (
                largest.path if largest and largest.largest_lesion_px else None
            ),
        }

    @property
    def tables(self) -> list[dict[str, Any]]:
        """The night's jobs with the API paths of their per-study and per-lesion tables
        (metrics, MIP biomarkers, lesions: docs/BIOMARKERS.md)."""
        return [
            {
                "job_id": job_id,
                "results_csv": f"/v1/jobs/{job_id}/results.csv",
                "lesions_csv": f"/v1/jobs/{job_id}/lesions.csv",
            }
            for job_id in sorted({r.job_id for r in self.rows})
        ]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form: date, the day's bounds, summary, the jobs' tables and rows."""
        return {
            "date": self.date,
            "start": self.start,
            "end": self.end,
            "summary": self.summary,
            "tables": self.tables,
            "studies": [asdict(r) for r in self.rows],
        }


def day_bounds(day: date, zone: tzinfo | None) -> tuple[datetime, datetime]:
    """Start and end (exclusive) of ``day`` in ``zone`` (None: the machine's zone)."""
    start, end = datetime.combine(day, time()), datetime.combine(day + timedelta(days=1), time())
    if zone is None:
        return start.astimezone(), end.astimezone()  # naive = local time, DST-aware
    return start.replace(tzinfo=zone), end.replace(tzinfo=zone)


def _flags(status: StudyStatus, lesions: int | None) -> list[str]:
    flags = []
    if status is StudyStatus.FAILED:
        flags.append("failed")
    elif status in UNFINISHED_STUDY:
        flags.append("unfinished")
    elif status is StudyStatus.CANCELLED:
        flags.append("cancelled")
    elif status is StudyStatus.REJECTED:
        flags.append("rejected")
    if lesions:
        flags.append("lesions")
    return flags


def nightly_report(session: Session, day: date, zone: tzinfo | None) -> NightlyReport:
    """Build the report of ``day``.

    Args:
        session: A read-only unit of work.
        day: The calendar day of the scan.
        zone: Time zone of the day (None: the machine's).

    Returns:
        The report; rows in submission order.

    Raises:
        ValueError: ``day`` is outside ``FIRST_DAY``..``LAST_DAY``.
    """
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(f"date {day} is outside {FIRST_DAY} to {LAST_DAY}")
    start, end = day_bounds(day, zone)
    rows = archive_repo.night_rows(session, start, end)
    results = studies_repo.latest_results(session, [study.id for _, study, _ in rows])
    report = NightlyReport(day.isoformat(), start.isoformat(), end.isoformat())
    for entry, study, _job in rows:
        result = results.get(study.id) if study.status is StudyStatus.SUCCEEDED else None
        row = studies_repo.study_row(study, result)
        report.rows.append(
            ReportRow(
                path=entry.path,
                kind=entry.kind,
                content_hash=entry.content_hash,
                flags=_flags(study.status, row["lesions"]),
                **{k: row[k] for k in ROW_FROM_STUDY},
                model_version=row["model_version"] or entry.model_version,
            )
        )
    return report


def to_json(report: NightlyReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.as_dict(), indent=2)


def to_csv(report: NightlyReport) -> str:
    """The report as CSV, one row per study (flags joined with ``;``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        values = asdict(row)
        values["flags"] = ";".join(row.flags)
        writer.writerow({k: values[k] for k in COLUMNS})
    return buffer.getvalue()
