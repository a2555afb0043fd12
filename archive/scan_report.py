"""What an archive scan plans and reports (``archive/scan.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from archive.pacs_source import PacsSeries
from archive.sources import Problem

_SKIP_IN_DICT = ("files", "pacs")


class ScanError(RuntimeError):
    """A scan that cannot run as asked (bad --root, no model); nothing was submitted."""


@dataclass
class Planned:
    """A study the scan submits (or would submit, in a dry run)."""

    kind: str
    root: str
    path: str
    content_hash: str
    reason: str  # "new" or "reprocess <old version>"
    files: tuple[Path, ...] = ()
    source_study_id: int | None = None  # re-processing: the study whose input is reused
    pacs: PacsSeries | None = None  # a series of a PACS (kind ``dicomweb``)


@dataclass
class ScanReport:
    """What a scan found and did."""

    dry_run: bool
    model_version: str | None = None
    planned: list[Planned] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: PACS series left out by rule (not original, not attenuation corrected, still
    #: arriving), with the reason; problems are what is broken.
    skipped: list[Problem] = field(default_factory=list)
    already_done: int = 0
    job_id: int | None = None
    submitted: int = 0
    locked: bool = False  # another scan held the lock: this one did nothing
    started_at: datetime | None = None  # when the files were listed

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the task's return value)."""
        planned = [
            {
                **{f.name: getattr(p, f.name) for f in fields(p) if f.name not in _SKIP_IN_DICT},
                "suv": p.pacs.suv.note if p.pacs else None,
            }
            for p in self.planned
        ]
        return {
            "dry_run": self.dry_run,
            "model_version": self.model_version,
            "planned": planned,
            "problems": [asdict(p) for p in self.problems],
            "skipped": [asdict(p) for p in self.skipped],
            "already_done": self.already_done,
            "job_id": self.job_id,
            "submitted": self.submitted,
            "locked": self.locked,
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }
