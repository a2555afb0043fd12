"""The archive scan: find studies not yet segmented by the current model, submit them.

One scan makes at most one job (``source=archive``, on the nightly queue). A study is
known by its content hash; the database refuses a second entry of the same hash for
the same model version (``uq_archive_entries_hash_model``), so "never twice" holds even
if two scans race. Real scans also take a Redis lock, so two beats do not even try.

Steps: *plan* (walk the roots, hash, compare with the database; ask each PACS for its
new PET series, ``archive/pacs_scan.py``), then *submit* (render volumes and series to
MIP PNGs, store the job in one transaction) and, after the commit, send the chunks. If
the broker refuses them the studies stay queued and the recovery pass sends them
(``core/dispatch.py``), as for every producer. A real scan ends with a PACS outbox pass
(``archive/pacs_export.py``): the PACS studies that succeeded since get their exports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archive import pacs_scan, sources
from archive.dicomweb import PacsError
from archive.lock import SCAN_LOCK_KEY, redis_lock
from archive.pacs_source import DICOMWEB
from archive.rendering import RenderError, RenderOptions, probe_study, render_study
from archive.scan_report import Planned, ScanError, ScanReport
from archive.sources import Candidate, Problem
from config.settings import PacsEndpoint, Settings
from core.broker import broker_url, redis_py_url
from core.current_model import current_model
from core.dispatch import Dispatcher, send_after_commit
from db.models import JobSource, utcnow
from db.repositories import archive as archive_repo
from db.repositories import jobs as jobs_repo
from db.repositories import pacs as pacs_repo
from db.session import session_scope
from model.manifest import ArtifactError
from model.png import ImageLimits, InvalidImage, validate_png

logger = logging.getLogger(__name__)

#: The name of the jobs a scan submits.
JOB_NAME = "archive scan"

#: A study's PNG and its pixel spacing in mm (rows, columns), None when unknown.
RenderedInput = tuple[bytes, tuple[float, float] | None]

__all__ = ["Planned", "ScanError", "ScanReport", "plan_scan", "scan_archive", "select_roots"]


def select_roots(
    settings: Settings, override: Sequence[Path] | None = None
) -> tuple[list[Path], list[Path] | None, list[Problem]]:
    """The resolved configured roots, and the folders inside them to walk (None: all).

    Raises:
        ScanError: No root is configured, or an override lies outside every root.
    """
    configured, problems = sources.resolve_roots(settings.archive_root_paths)
    if not settings.archive_root_paths:
        raise ScanError("no archive configured: set TUMORSEG_ARCHIVE_ROOTS")
    if not override:
        return configured, None, problems
    folders: list[Path] = []
    for path in override:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in configured):
            raise ScanError(f"--root {path} is not inside a configured archive root")
        if not resolved.is_dir():
            problems.append(Problem(str(path), "not a folder"))
            continue
        folders.append(resolved)
    return configured, folders, problems


def plan_scan(
    session: Session,
    settings: Settings,
    roots: Sequence[Path],
    since: datetime | None = None,
    reprocess_model: str | None = None,
    report: ScanReport | None = None,
    folders: Sequence[Path] | None = None,
    endpoints: Sequence[PacsEndpoint] = (),
) -> ScanReport:
    """Find what to submit: new content, and with ``reprocess_model`` its old results.

    Args:
        session: A read-only unit of work.
        settings: Service settings.
        roots: Resolved archive roots.
        since: Only files modified at or after this time count as new.
        reprocess_model: Re-queue archive studies whose result is of this version.
        report: The report to fill (a new dry-run report when None).
        folders: Walk only these folders inside ``roots`` (None: the whole roots).
        endpoints: PACS endpoints to ask for new PET series.

    Returns:
        The report with ``planned``, ``problems`` and ``already_done`` filled in.
    """
    report = report or ScanReport(dry_run=True)
    report.started_at = utcnow()
    try:
        version = report.model_version = current_model(session, settings).version
    except ArtifactError as exc:
        raise ScanError(f"no current model to scan for: {exc}") from exc
    pacs_scan.plan_pacs(session, settings, endpoints, since, report)
    candidates, problems = sources.discover(roots, since, folders) if roots else ([], [])
    report.problems.extend(problems)
    # a file at a path already submitted and not modified since: same content, no re-read
    submitted = archive_repo.submitted_paths(session, sorted({str(c.root) for c in candidates}))
    hashed: dict[str, Candidate] = {}
    unchanged = 0
    for candidate in candidates:
        when = submitted.get((str(candidate.root), candidate.rel_path))
        if when is not None and candidate.mtime < when.timestamp():
            unchanged += 1
            continue
        try:
            digest = sources.content_hash(candidate)
        except (OSError, sources.ConfinementError) as exc:
            report.problems.append(Problem(str(candidate.path), f"unreadable: {exc}"))
            continue
        if digest in hashed:
            logger.info("%s duplicates %s", candidate.path, hashed[digest].path)
            continue
        hashed[digest] = candidate
    known = archive_repo.known_hashes(session, list(hashed))
    report.already_done += len(known) + unchanged
    for digest, candidate in hashed.items():
        if digest not in known:
            report.planned.append(
                Planned(
                    candidate.kind,
                    str(candidate.root),
                    candidate.rel_path,
                    digest,
                    "new",
                    files=candidate.files,
                )
            )
    if reprocess_model:
        old = archive_repo.reprocessable(session, reprocess_model)
        planned = {p.content_hash for p in report.planned}
        old = [row for row in old if row.content_hash not in planned]
        done = archive_repo.hashes_done(session, [r.content_hash for r in old], version)
        for row in old:
            if row.content_hash not in done:
                report.planned.append(
                    Planned(
                        row.kind,
                        row.root,
                        row.path,
                        row.content_hash,
                        f"reprocess {reprocess_model}",
                        source_study_id=row.study_id,
                    )
                )
    return report


def _sources(
    settings: Settings, roots: Sequence[Path] | None, source: str | None
) -> tuple[list[Path], list[Path] | None, list[Problem], list[PacsEndpoint]]:
    """The folders and the PACS endpoints a scan looks at.

    Raises:
        ScanError: Nothing is configured, or ``roots`` or ``source`` name what is not.
    """
    if roots and source:
        raise ScanError("--root and --source exclude each other")
    try:
        endpoints = pacs_scan.choose_endpoints(settings, source) if not roots else []
    except pacs_scan.SourceError as exc:
        raise ScanError(str(exc)) from exc
    if source is not None or (endpoints and not settings.archive_root_paths):
        return [], None, [], endpoints
    if not settings.archive_root_paths and not endpoints:
        raise ScanError(
            "no archive configured: set TUMORSEG_ARCHIVE_ROOTS or TUMORSEG_PACS_ENDPOINTS"
        )
    chosen, folders, problems = select_roots(settings, roots)
    return chosen, folders, problems, endpoints


def scan_archive(
    settings: Settings,
    *,
    roots: Sequence[Path] | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
    reprocess_model: str | None = None,
    dispatcher: Dispatcher | None = None,
    source: str | None = None,
) -> ScanReport:
    """Scan the archive and submit what is new as one nightly job.

    Args:
        settings: Service settings (``archive_roots``, ``pacs_endpoints`` and rendering
            options).
        roots: Scan only these folders (each inside a configured root), no PACS.
        since: Only files modified at or after this time count as new; for a PACS, the
            first StudyDate of the window.
        dry_run: Plan only: no lock, headers checked but nothing rendered, stored or
            sent.
        reprocess_model: Also re-queue studies whose result is of this older version.
        dispatcher: Sends the job's chunks after its commit; required unless ``dry_run``.
        source: Scan only the PACS endpoint of this name, no folders.

    Returns:
        The report; ``locked`` when another scan was running (nothing done).

    Raises:
        ScanError: Bad roots or source, or no current model.
    """
    chosen, folders, root_problems, endpoints = _sources(settings, roots, source)
    report = ScanReport(dry_run=dry_run, problems=list(root_problems))
    if dry_run:
        with session_scope(settings.sqlalchemy_url) as session:
            plan_scan(session, settings, chosen, since, reprocess_model, report, folders, endpoints)
        _probe(settings, report)
        return report
    if dispatcher is None:
        raise ValueError("a dispatcher is required for a real scan")
    lock_url = redis_py_url(broker_url(settings))
    with redis_lock(lock_url, SCAN_LOCK_KEY, settings.archive_scan_time_limit) as held:
        if not held:
            report.locked = True
            return report
        with session_scope(settings.sqlalchemy_url) as session:
            plan_scan(session, settings, chosen, since, reprocess_model, report, folders, endpoints)
        if report.planned:
            _submit(settings, report, dispatcher)
    _log(report)
    _outbox(settings, dispatcher)
    return report


def _outbox(settings: Settings, dispatcher: Dispatcher) -> None:
    """The scan side of the PACS export: finished PACS studies get their exports."""
    from archive.pacs_export import outbox_pass  # lazy: highdicom only where exporting

    try:
        outbox_pass(settings, dispatcher)
    except Exception as exc:  # the next pass (beat's, or the next scan's) catches up
        logger.warning("PACS outbox pass after the scan failed: %s: %s", type(exc).__name__, exc)


def _log(report: ScanReport) -> None:
    logger.info(
        "archive scan: %d submitted (job %s) for %s, %d already done, %d problems",
        report.submitted,
        report.job_id,
        report.model_version,
        report.already_done,
        len(report.problems),
    )
    for problem in report.problems:
        logger.warning("archive scan skipped %s: %s", problem.path, problem.reason)
    for skipped in report.skipped:
        logger.info("archive scan left out %s: %s", skipped.path, skipped.reason)


def _probe(settings: Settings, report: ScanReport) -> None:
    """Drop what a real scan would skip, as far as headers tell (dry runs render nothing)."""
    kept = []
    for item in report.planned:
        try:
            if item.source_study_id is None and item.kind != DICOMWEB:  # PACS: headers checked
                root = Path(item.root)
                if item.kind == sources.PNG:
                    _check_png(sources.read_confined(item.files[0], root), item.path, settings)
                else:
                    probe_study(item.kind, [sources.confine(p, root) for p in item.files])
        except (RenderError, OSError, sources.ConfinementError) as exc:
            report.problems.append(Problem(f"{item.root}/{item.path}", str(exc)))
            continue
        kept.append(item)
    report.planned = kept


def _render(
    item: Planned,
    renderer: pacs_scan.SeriesRenderer,
    origins: dict[str, pacs_scan.RenderedSeries],
    settings: Settings,
) -> RenderedInput:
    """A new study's PNG with its pixel spacing (rendered volumes know it; PNGs do not);
    a PACS series' rendering is kept in ``origins`` by its content hash."""
    if item.pacs is not None:
        done = renderer.render(item.pacs)
        origins[item.content_hash] = done
        return done.rendered.png, done.rendered.spacing_mm
    root = Path(item.root)
    if item.kind == sources.PNG:
        data = sources.read_confined(item.files[0], root)
        _check_png(data, item.path, settings)
        return data, None
    for path in item.files:
        sources.confine(path, root)
    rendered = render_study(item.kind, item.files, renderer.options)
    return rendered.png, rendered.spacing_mm


def _check_png(data: bytes, path: str, settings: Settings) -> None:
    limits = ImageLimits(settings.max_image_side, settings.max_image_pixels)
    try:
        validate_png(data, path, limits)
    except InvalidImage as exc:
        raise RenderError(str(exc)) from exc


def _submit(settings: Settings, report: ScanReport, dispatcher: Dispatcher) -> None:
    """Render the new studies (before any transaction: a volume takes seconds, a PACS
    series is fetched first), then store the job, its studies, their archive entries and
    PACS origins in one unit of work, and send it."""
    options = RenderOptions(
        clip_percentile=settings.archive_clip_percentile,
        suv_max=settings.archive_suv_max,
        max_height=settings.max_image_side,
    )
    renderer = pacs_scan.SeriesRenderer(settings, options)  # folders' volumes use its options
    origins: dict[str, pacs_scan.RenderedSeries] = {}
    renders: list[tuple[Planned, RenderedInput | None]] = []
    for item in report.planned:
        if item.source_study_id is not None:  # re-processing: its input is stored
            renders.append((item, None))
            continue
        try:
            renders.append((item, _render(item, renderer, origins, settings)))
        except (RenderError, OSError, sources.ConfinementError, PacsError) as exc:
            report.problems.append(Problem(f"{item.root}/{item.path}", str(exc)))
    try:
        with session_scope(settings.sqlalchemy_url, dispatcher.after_commit) as session:
            rendered: list[tuple[Planned, RenderedInput]] = []
            for item, found in renders:
                if found is None:
                    found = archive_repo.study_input(session, item.source_study_id or 0)
                if found is None:
                    report.problems.append(
                        Problem(f"{item.root}/{item.path}", "the earlier study is gone")
                    )
                else:
                    rendered.append((item, found))
            report.planned = [item for item, _ in rendered]
            if not rendered:
                return
            new = [
                jobs_repo.NewStudy(item.path[-255:], png, spacing_mm=spacing)
                for item, (png, spacing) in rendered
            ]
            job = jobs_repo.create_job(
                session, settings.nightly_queue, new, source=JobSource.ARCHIVE, name=JOB_NAME
            )
            for study, item in zip(job.studies, report.planned, strict=True):
                archive_repo.add_entry(
                    session,
                    study.id,
                    item.content_hash,
                    report.model_version or "",
                    item.kind,
                    item.root,
                    item.path,
                    seen_at=report.started_at,
                )
                if item.content_hash in origins:
                    pacs_scan.record_origin(session, study.id, origins[item.content_hash])
                elif item.kind == DICOMWEB and item.source_study_id is not None:
                    pacs_repo.copy_pacs_study(session, item.source_study_id, study.id)
            session.flush()  # the unique constraint speaks now, not at the commit
            ids = [study.id for study in job.studies]
            send_after_commit(session, ids, settings.nightly_queue)
            report.job_id, report.submitted = job.id, len(ids)
    except IntegrityError as exc:
        report.problems.append(
            Problem("*", f"another scan submitted the same studies first: {exc.orig}")
        )
        report.planned, report.job_id, report.submitted = [], None, 0
    finally:
        renderer.close()
