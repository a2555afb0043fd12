"""The archive scan's PACS part: plan the endpoints' new series, render them, record
where each study came from (``archive/scan.py`` calls these).

A scan looks at every configured endpoint (or only ``--source NAME``) for PET studies
whose StudyDate lies in the window: the last ``pacs_lookback_days`` days up to today in
``archive_timezone``, or from ``--since``. What it plans carries the series
(``archive/pacs_source.py``); at submission each series is retrieved and rendered, and
its study gets a ``pacs_studies`` row with the SUV factor and the quantitative MIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from archive.dicomweb import DicomwebArchive
from archive.pacs_source import DICOMWEB, PacsScan, PacsSeries, render_series, scan_endpoint
from archive.rendering import RenderedStudy, RenderError, RenderOptions
from archive.scan_report import Planned, ScanReport
from archive.sources import Problem
from archive.suv import encode_quant_mip
from config.settings import PacsEndpoint, Settings
from db.repositories import archive as archive_repo
from db.repositories import pacs as pacs_repo


class SourceError(ValueError):
    """``--source`` names no configured PACS endpoint."""


def choose_endpoints(settings: Settings, source: str | None) -> list[PacsEndpoint]:
    """The endpoints a scan looks at: all, or the one named ``source``.

    Raises:
        SourceError: ``source`` names no endpoint.
    """
    if source is None:
        return list(settings.pacs_endpoints)
    try:
        return [settings.pacs_endpoint(source)]
    except KeyError as exc:
        raise SourceError(str(exc.args[0])) from exc


def study_window(settings: Settings, since: datetime | None) -> tuple[date, date]:
    """The StudyDate window of a scan: ``since`` (or ``pacs_lookback_days`` ago) to today."""
    today = datetime.now(settings.archive_tzinfo).date()
    lookback = timedelta(days=settings.pacs_lookback_days - 1)
    start = since.date() if since is not None else today - lookback
    return min(start, today), today


def plan_endpoints(
    session: Session,
    settings: Settings,
    endpoints: Sequence[PacsEndpoint],
    since: datetime | None = None,
) -> list[PacsScan]:
    """Look at each endpoint for new series (see ``archive/pacs_source.py``).

    Args:
        session: A read-only unit of work (which identities are known).
        settings: Service settings.
        endpoints: The endpoints to look at.
        since: First StudyDate (default: ``pacs_lookback_days`` ago).

    Returns:
        One :class:`PacsScan` per endpoint, in their order.
    """
    start, end = study_window(settings, since)

    def known(identities: Sequence[str]) -> set[str]:
        return archive_repo.known_hashes(session, identities)

    scans = []
    for endpoint in endpoints:
        archive = DicomwebArchive(endpoint)
        try:
            scans.append(scan_endpoint(archive, start, end, known))
        finally:
            archive.close()
    return scans


@dataclass(frozen=True)
class RenderedSeries:
    """A PACS series rendered for submission."""

    series: PacsSeries
    rendered: RenderedStudy


class SeriesRenderer:
    """Retrieves and renders planned series, one DICOMweb client per endpoint."""

    def __init__(self, settings: Settings, options: RenderOptions) -> None:
        self.settings, self.options = settings, options
        self._clients: dict[str, DicomwebArchive] = {}

    def render(self, series: PacsSeries) -> RenderedSeries:
        """Retrieve and render one series.

        Raises:
            archive.dicomweb.PacsError: The PACS failed.
            RenderError: The series cannot be rendered.
        """
        client = self._clients.get(series.endpoint)
        if client is None:
            try:
                endpoint = self.settings.pacs_endpoint(series.endpoint)
            except KeyError as exc:
                raise RenderError(str(exc.args[0])) from exc
            client = self._clients[series.endpoint] = DicomwebArchive(endpoint)
        return RenderedSeries(series, render_series(client, series, self.options))

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def record_origin(session: Session, study_id: int, done: RenderedSeries) -> None:
    """Give a new study its ``pacs_studies`` row: origin, SUV factor, quantitative MIP."""
    series = done.series
    quant, slope = (None, None)
    if done.rendered.mip is not None:
        quant, slope = encode_quant_mip(done.rendered.mip)
    pacs_repo.add_pacs_study(
        session,
        study_id,
        endpoint=series.endpoint,
        study_instance_uid=series.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        identity=series.identity,
        sop_class_uid=series.sop_class_uid,
        sop_instance_uids=list(series.sop_instance_uids),
        patient=dict(series.patient),
        units=series.units,
        suv_factor=series.suv.factor,
        suv_note=series.suv.note,
        quant_mip=quant,
        quant_mip_slope=slope,
    )


def problems_of(scans: Sequence[PacsScan]) -> tuple[list[Problem], list[Problem], int]:
    """All endpoints' problems, skipped series and series done before."""
    problems = [p for scan in scans for p in scan.problems]
    skipped = [p for scan in scans for p in scan.skipped]
    return problems, skipped, sum(scan.already_done for scan in scans)


def plan_pacs(
    session: Session,
    settings: Settings,
    endpoints: Sequence[PacsEndpoint],
    since: datetime | None,
    report: ScanReport,
) -> None:
    """Add the endpoints' new series to the scan's plan, their problems, the series left
    out and those done before to its report."""
    scans = plan_endpoints(session, settings, endpoints, since)
    problems, skipped, done = problems_of(scans)
    report.problems.extend(problems)
    report.skipped.extend(skipped)
    report.already_done += done
    for scan in scans:
        for series in scan.series:
            report.planned.append(
                Planned(DICOMWEB, series.root, series.path, series.identity, "new", pacs=series)
            )
