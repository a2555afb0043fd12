"""Sending PACS studies' results back to their PACS, through an outbox.

*Outbox.* A study that came from a PACS whose endpoint has ``export`` on, once it
succeeded, gets one ``pacs_exports`` row per model version (unique), listing the
objects to send with their deterministic UIDs (``archive/dicom_results.py``). Rows are
made by :func:`queue_exports`, which the outbox pass runs (beat's
``tumorseg.pacs_outbox`` every ``pacs_outbox_interval`` seconds, and every archive
scan); the worker's chunk may call it too once its results are stored (see
``docs/ARCHIVE.md``).

*Sending.* A due row is taken (its next attempt moved ahead, so a lost task only delays
it) and a ``tumorseg.pacs_export`` task is sent after the commit. :func:`export_one`
builds the objects and stores the missing ones one at a time, recording each as it is
stored. A PACS that is down or refuses makes the row wait (``pacs_export_retry_seconds``,
doubling up to an hour) and keeps its reason; nothing is given up or lost. A retry
sends only what the PACS has not stored yet, under the same UIDs: never a second copy.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from archive import dicom_results as dr
from archive.dicomweb import DicomwebArchive, PacsError
from archive.suv import decode_quant_mip, lesion_suv
from config.settings import PacsEndpoint, Settings
from core.celery_app import PACS_EXPORT_TASK
from core.current_model import current_model
from core.dispatch import Dispatcher, task_after_commit
from db.models import PacsExport, PacsExportState, PacsStudy, utcnow
from db.repositories import model_versions as models_repo
from db.repositories import pacs as pacs_repo
from db.repositories import studies as studies_repo
from db.session import session_scope
from model.manifest import ArtifactError, read_manifest

logger = logging.getLogger(__name__)

#: Longest wait between two attempts of one export, seconds.
MAX_RETRY_SECONDS = 3600

#: Makes the DICOMweb client of an endpoint (tests pass one that stops the PACS).
ArchiveFactory = Callable[[PacsEndpoint], DicomwebArchive]


class ExportDataError(ValueError):
    """The study's stored results cannot make the objects (gone, or inconsistent)."""


@dataclass
class OutboxReport:
    """What one outbox pass did."""

    added: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"added": self.added, "sent": self.sent}


@dataclass
class ExportReport:
    """What one export attempt did."""

    export_id: int
    state: str = "missing"
    stored: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "export_id": self.export_id,
            "state": self.state,
            "stored": self.stored,
            "error": self.error,
        }


def export_kinds(endpoint: PacsEndpoint) -> tuple[str, ...]:
    """The objects an endpoint gets: SC, SEG, SR, and the overlay unless turned off."""
    kinds = (dr.SC, dr.SEG, dr.SR)
    return (*kinds, dr.OVERLAY) if endpoint.export_overlay else kinds


def source_series(pacs: PacsStudy) -> dr.SourceSeries:
    """The source series of a study's PACS origin."""
    return dr.SourceSeries(
        study_instance_uid=pacs.study_instance_uid,
        series_instance_uid=pacs.series_instance_uid,
        sop_class_uid=pacs.sop_class_uid,
        sop_instance_uids=tuple(pacs.sop_instance_uids),
        identity=pacs.identity,
        patient={k: str(v) for k, v in pacs.patient.items()},
    )


def queue_exports(
    session: Session,
    settings: Settings,
    study_ids: Sequence[int] | None = None,
    now: datetime | None = None,
) -> OutboxReport:
    """Put finished PACS studies' results in the outbox and send what is due.

    Inside a unit of work whose ``on_commit`` is a dispatcher's (the tasks go after its
    commit: ``core.dispatch.task_after_commit``). With ``study_ids`` (a worker's stored
    batch) only those studies' new exports are added and sent; without, every finished
    PACS study lacking one, and every due export.

    Returns:
        The outbox rows added, and those whose task goes after the commit.
    """
    now = now or utcnow()
    report = OutboxReport()
    endpoints = {e.name: e for e in settings.pacs_endpoints if e.export}
    for study_id, model_version, name in pacs_repo.studies_to_export(
        session, list(endpoints), study_ids
    ):
        pacs = pacs_repo.pacs_study(session, study_id)
        if pacs is None:  # removed meanwhile
            continue
        objects = dr.planned_objects(
            source_series(pacs), model_version, export_kinds(endpoints[name])
        )
        added = pacs_repo.add_export(session, study_id, model_version, name, objects, now)
        if added is not None:
            report.added.append(added)
    hold = now + timedelta(seconds=settings.task_time_limit + 60)
    only = report.added if study_ids is not None else None
    # an endpoint whose export was turned off keeps its rows, unsent, until it is on again
    report.sent = pacs_repo.claim_due(session, now, hold, list(endpoints), only=only)
    for export_id in report.sent:
        task_after_commit(session, PACS_EXPORT_TASK, [export_id], settings.interactive_queue)
    return report


def outbox_pass(settings: Settings, dispatcher: Dispatcher) -> OutboxReport:
    """One outbox pass in its own unit of work (beat's task, and every archive scan)."""
    if not any(e.export for e in settings.pacs_endpoints):
        return OutboxReport()
    with session_scope(settings.sqlalchemy_url, dispatcher.after_commit) as session:
        report = queue_exports(session, settings)
    if report.added or report.sent:
        logger.info("PACS outbox: %d new exports, %d sent", len(report.added), len(report.sent))
    return report


def retry_delay(settings: Settings, failures: int) -> timedelta:
    """The wait after the ``failures``-th failed attempt (1 for the first)."""
    seconds = settings.pacs_export_retry_seconds * 2 ** max(failures - 1, 0)
    return timedelta(seconds=min(seconds, MAX_RETRY_SECONDS))


def export_one(
    settings: Settings,
    export_id: int,
    archive_factory: ArchiveFactory = DicomwebArchive,
) -> ExportReport:
    """Send one export's missing objects to its PACS (the ``tumorseg.pacs_export`` task).

    Idempotent: an export already sent, or gone, is left alone; objects the PACS
    stored before are not sent again. A failure is recorded on the row, with its next
    attempt, and is not raised.

    Args:
        settings: Service settings (the endpoint, the database).
        export_id: The outbox row.
        archive_factory: Makes the endpoint's DICOMweb client.

    Returns:
        The row's state afterwards and the objects stored by this attempt.
    """
    report = ExportReport(export_id)
    url = settings.sqlalchemy_url
    try:
        with session_scope(url) as session:
            export = pacs_repo.get_export(session, export_id)
            if export is None:
                return report
            report.state = export.state.value
            if export.state is PacsExportState.SENT:
                return report
            endpoint = settings.pacs_endpoint(export.endpoint)
            pending = [o for o in export.objects if not o["stored"]]
            built = _build(session, settings, export)
        archive = archive_factory(endpoint)
        try:
            for item in pending:
                archive.store([built[item["kind"]]], built[dr.SC].StudyInstanceUID)
                with session_scope(url) as session:
                    row = pacs_repo.get_export(session, export_id)
                    if row is not None:
                        pacs_repo.mark_stored(session, row, item["sop_instance_uid"])
                report.stored.append(item["kind"])
        finally:
            archive.close()
    except (PacsError, KeyError, ExportDataError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        _failed(settings, export_id, report)
        return report
    except Exception as exc:  # e.g. highdicom refusing a value: kept on the row, retried
        logger.exception("PACS export %d: the objects could not be built or sent", export_id)
        report.error = f"{type(exc).__name__}: {exc}"
        _failed(settings, export_id, report)
        return report
    with session_scope(url) as session:
        row = pacs_repo.get_export(session, export_id)
        if row is not None:
            pacs_repo.mark_sent(session, row, utcnow())
    report.state = PacsExportState.SENT.value
    logger.info("PACS export %d sent: %s", export_id, report.stored)
    return report


def _failed(settings: Settings, export_id: int, report: ExportReport) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        row = pacs_repo.get_export(session, export_id)
        if row is None:
            return
        delay = retry_delay(settings, row.attempts + 1)
        pacs_repo.mark_failed(session, row, report.error or "?", utcnow() + delay)
        report.state = row.state.value
    logger.warning(
        "PACS export %d failed (next attempt in %ds): %s",
        export_id,
        delay.total_seconds(),
        report.error,
    )


# -- the objects' inputs ---------------------------------------------------------------
def _build(session: Session, settings: Settings, export: PacsExport) -> dict[str, Any]:
    """Build the export's objects from the stored study, result, lesions and origin.

    Raises:
        ExportDataError: Something they need is gone or does not fit.
    """
    pacs = pacs_repo.pacs_study(session, export.study_id, with_mip=True)
    study = studies_repo.load_studies(session, [export.study_id], with_bytes=True)
    result = pacs_repo.result_of(session, export.study_id, export.model_version)
    if pacs is None or not study or result is None:
        raise ExportDataError(f"study {export.study_id} or its result is gone")
    mip = _gray(study[0].input_png)
    mask = _gray(result.mask_png) > 127
    if mip.shape != mask.shape:
        raise ExportDataError(f"stored MIP {mip.shape} and mask {mask.shape} differ")
    rows_mm, cols_mm = study[0].spacing_row_mm, study[0].spacing_col_mm
    spacing = (rows_mm, cols_mm) if rows_mm is not None and cols_mm is not None else None
    lesions = _lesions(session, export, pacs, mask)
    suv_max = max((le.suv_max for le in lesions if le.suv_max is not None), default=None)
    findings = dr.Findings(
        mip=mip,
        mask=mask,
        spacing_mm=spacing,
        tumor_area_px=result.tumor_pixels,
        tumor_area_cm2=result.tumor_area_cm2,
        lesion_count=result.lesions,
        sdmax_cm=result.sdmax_cm,
        suv_max=suv_max,
        lesions=tuple(lesions),
    )
    provenance = dr.Provenance(
        model_version=export.model_version,
        artifact_sha256=artifact_sha256(session, settings, export.model_version),
        software_version=_software_version(),
        made_at=result.created_at,
    )
    kinds = [o["kind"] for o in export.objects]
    built = dr.build_objects(source_series(pacs), provenance, findings, kinds)
    for item in export.objects:  # the UIDs are the outbox's, or the PACS would get a copy
        if built[item["kind"]].SOPInstanceUID != item["sop_instance_uid"]:
            raise ExportDataError(f"the {item['kind']} object's UID differs from the outbox's")
    return built


def _lesions(
    session: Session, export: PacsExport, pacs: PacsStudy, mask: np.ndarray
) -> list[dr.LesionFinding]:
    rows = studies_repo.lesions_of(session, export.study_id, export.model_version)
    suvs = {}
    if pacs.suv_factor is not None and pacs.quant_mip is not None and pacs.quant_mip_slope:
        values = decode_quant_mip(pacs.quant_mip, pacs.quant_mip_slope)
        if values.shape == mask.shape:
            suvs = {s.bbox: s for s in lesion_suv(mask, values, pacs.suv_factor)}
    found = []
    for row in rows:
        bbox = (row.bbox_row0, row.bbox_col0, row.bbox_row1, row.bbox_col1)
        suv = suvs.get(bbox)
        found.append(
            dr.LesionFinding(
                number=row.number,
                bbox=bbox,
                area_px=row.area_px,
                area_mm2=row.area_mm2,
                suv_max=suv.suv_max if suv else None,
                suv_mean=suv.suv_mean if suv else None,
            )
        )
    return found


def artifact_sha256(session: Session, settings: Settings, model_version: str) -> str:
    """The SHA-256 of a model version's weights (its manifest's ``weights_sha256``):
    from its registered row, else from the current artifact when it is that version;
    ``unknown`` otherwise."""
    row = models_repo.get_version(session, model_version)
    if row is not None and row.manifest.get("weights_sha256"):
        return str(row.manifest["weights_sha256"])
    try:
        model = current_model(session, settings)
        manifest = read_manifest(model.path)
    except (ArtifactError, OSError):
        return "unknown"
    return manifest.weights_sha256 if manifest.version == model_version else "unknown"


def _software_version() -> str:
    try:
        return version("tumorseg")
    except PackageNotFoundError:
        return "unknown"


def _gray(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"))
