"""A job's tables as CSV: one row per study, and one row per lesion.

The columns are documented in ``docs/BIOMARKERS.md``; each file opens with
``pandas.read_csv``. Empty cells are unknown values (no result, no spacing, no label).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from api.services.auth import Principal
from api.services.jobs import get_job_or_404
from db.models import LESION_FIELDS
from db.repositories import studies as studies_repo

#: Columns of ``results.csv``.
RESULT_COLUMNS: tuple[str, ...] = studies_repo.STUDY_ROW_FIELDS
#: Columns of ``lesions.csv``.
LESION_COLUMNS: tuple[str, ...] = (
    "job_id",
    "study_id",
    "filename",
    "model_version",
    *LESION_FIELDS,
)


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def results_csv(session: Session, job_id: int, principal: Principal) -> str:
    """One row per study of the job, with its newest result's metrics and biomarkers."""
    job = get_job_or_404(session, job_id, principal)
    studies = list(job.studies)
    results = studies_repo.latest_results(session, [s.id for s in studies])
    rows = [studies_repo.study_row(study, results.get(study.id)) for study in studies]
    return _csv(RESULT_COLUMNS, rows)


def lesions_csv(session: Session, job_id: int, principal: Principal) -> str:
    """One row per lesion of the newest result of every study of the job."""
    job = get_job_or_404(session, job_id, principal)
    names = {s.id: s.filename for s in job.studies}
    rows = [
        {
            "job_id": job.id,
            "study_id": le.study_id,
            "filename": names[le.study_id],
            "model_version": le.model_version,
            **{name: getattr(le, name) for name in LESION_FIELDS},
        }
        for le in studies_repo.job_lesions(session, job.id)
    ]
    return _csv(LESION_COLUMNS, rows)
