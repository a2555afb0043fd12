"""The service logic of one chunk: claim, then per batch predict, find and store.

No database transaction stays open while the model runs. A chunk takes one
transaction to claim its studies, then one per batch of the network:

1. *claim* (one transaction, ``db/status.py::claim``): skip studies that are cancelled,
   failed, already done with the current model version or held by another live worker's
   lease; fail those past the delivery cap; mark the rest running under this process's
   lease, which a heartbeat thread renews until the chunk ends (``worker/leases.py``).
2. *decode* (no transaction): each study's PNG in a thread pool; a bad one is failed
   with a clear message and the others go on.
3. *per batch* (no transaction while it computes): the network's batch
   (``Predictor.iter_batches``), then each study's findings (``model/findings.py``: mask,
   metrics, lesions, biomarkers) and mask PNG; then one transaction stores the batch's
   results and lesion rows, ends its studies and reads which of the chunk's studies are
   still this worker's. So a job's counts move as each batch ends, and a study cancelled
   meanwhile is left out of the batches that follow.

A chunk that an earlier delivery claimed and never stored (its process was killed, maybe
by one of its studies) is claimed one study at a time instead, so that only the study
that kills its worker uses up its deliveries, and its chunk-mates are done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from config.settings import Settings
from core.current_model import current_model
from core.dispatch import Dispatcher
from db import status
from db.models import BIOMARKER_FIELDS, METRIC_FIELDS, utcnow
from db.repositories import studies as studies_repo
from db.session import session_scope
from worker.leases import Heartbeat, held_elsewhere, lease_owner
from worker.predictor_cache import PredictorCache

if TYPE_CHECKING:
    import numpy as np

    from model.findings import Findings
    from model.predictor import Prediction, Predictor

logger = logging.getLogger(__name__)


@dataclass
class ClaimedStudy:
    """A study this delivery will segment, with its bytes."""

    id: int
    job_id: int
    filename: str
    input_png: bytes
    label_png: bytes | None
    spacing: tuple[float, float] | None = None  # mm (rows, columns), when known


@dataclass
class Decoded:
    """A claimed study's arrays."""

    study: ClaimedStudy
    image: np.ndarray
    label: np.ndarray | None


@dataclass
class Outcome:
    """What happened to one claimed study: its result's values and its lesion rows."""

    study_id: int
    error: str | None = None
    #: The input check refused the study (`error` says why).
    rejected: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    lesions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChunkReport:
    """Summary of one chunk, returned by the task (and logged as JSON)."""

    model_version: str
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    #: Studies the input check refused (`model/quality.py`).
    rejected: list[int] = field(default_factory=list)
    #: Studies cancelled (or taken back) while the chunk ran, left out of its batches.
    dropped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: Where the seconds went: claim (with the promoted-model check), decode (the PNGs),
    #: predict (network, resampling, levels), findings (masks, metrics, lesions and the
    #: mask PNG) and store.
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "model_version": self.model_version,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "seconds": round(self.seconds, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
        }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def spacing_of(row_mm: float | None, col_mm: float | None) -> tuple[float, float] | None:
    """A study's pixel spacing, when both sides are known."""
    return (row_mm, col_mm) if row_mm is not None and col_mm is not None else None


def result_rows(
    study: Decoded, findings: Findings, model_version: str, inference_seconds: float
) -> Outcome:
    """The column values of a study's ``db.models.Result`` and ``Lesion`` rows."""
    from model.png import encode_mask_png

    image, study_id = study.image, study.study.id
    values: dict[str, Any] = {
        "study_id": study_id,
        "model_version": model_version,
        "mask_png": encode_mask_png(findings.mask),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "inference_seconds": inference_seconds,
    }
    for key in METRIC_FIELDS:
        values[key] = _finite(findings.metrics.get(key))
    biomarkers = findings.biomarkers.as_dict()
    for key in BIOMARKER_FIELDS:
        values[key] = _finite(biomarkers[key])
    lesions = []
    for lesion in findings.lesions:
        row = {k: _finite(v) for k, v in lesion.as_dict().items() if k != "bbox"}
        row["bbox_row0"], row["bbox_col0"], row["bbox_row1"], row["bbox_col1"] = lesion.bbox
        lesions.append({"study_id": study_id, "model_version": model_version, **row})
    return Outcome(study_id, values=values, lesions=lesions)


class SegmentationService:
    """Segments chunks of studies against one database with a cached predictor."""

    def __init__(
        self,
        settings: Settings,
        cache: PredictorCache | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self._dispatcher = dispatcher
        self.cache = cache or PredictorCache(
            settings.device,
            settings.batch_size,
            settings.torch_threads_per_process,
            settings.model_members,
            settings.runtime,
            settings.var_dir / "openvino",
        )

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Announces the jobs a chunk finishes, after each commit (``core/dispatch.py``);
        one on the configured broker, made at first use, unless one was given."""
        return self._dispatcher or Dispatcher(self.settings)

    def _unit_of_work(self) -> AbstractContextManager[Session]:
        """A unit of work whose commit announces the jobs it finished."""
        return session_scope(self.settings.sqlalchemy_url, self.dispatcher.after_commit)

    # -- model ---------------------------------------------------------------------
    def current_predictor(self) -> Predictor:
        """The predictor of the current model (reloaded when a promotion changed it)."""
        with session_scope(self.settings.sqlalchemy_url) as session:
            model = current_model(session, self.settings)
        return self.cache.get(model)

    # -- the chunk -----------------------------------------------------------------
    def run_chunk(self, study_ids: Sequence[int], owner: str | None = None) -> ChunkReport:
        """Segment the studies with these ids; safe to call again for the same ids.

        Args:
            study_ids: Ids of studies (normally of one job) to segment.
            owner: Lease owner of this process (``node:pid``); this process's default
                when None.

        Returns:
            Which studies succeeded, failed, were skipped or dropped.
        """
        owner = owner or lease_owner()
        with Heartbeat(self.settings, study_ids, owner):
            return self._run_chunk(study_ids, owner)

    def _run_chunk(self, study_ids: Sequence[int], owner: str) -> ChunkReport:
        started = time.perf_counter()
        predictor = self.current_predictor()
        report = ChunkReport(model_version=predictor.version)
        remaining = list(study_ids)
        while remaining:
            claimed, handled, interrupted = self._claim(remaining, predictor, report, owner)
            if interrupted:
                # An earlier delivery died holding these (a crash, an OOM kill, the hard
                # time limit), maybe because of one of them: one study per claim.
                logger.warning("chunk %s: claimed before and never finished; one at a time",
                               list(study_ids))  # fmt: skip
            remaining = [i for i in remaining if i not in handled]
            if claimed:
                self._segment(claimed, predictor, report, owner)
            if not handled:
                break  # the rest are gone from the database
        report.seconds = time.perf_counter() - started
        logger.info("chunk %s: %s", list(study_ids), json.dumps(report.as_dict()))
        return report

    def fail_unfinished(self, study_ids: Sequence[int], message: str) -> int:
        """Fail the studies among ``study_ids`` that are still queued or running.

        Used when a task dies in a way it can report (soft time limit, internal error),
        so that no job is left waiting for ever.
        """
        with self._unit_of_work() as session:
            return status.fail_unfinished(session, study_ids, message)

    # -- steps ---------------------------------------------------------------------
    def _claim(
        self, study_ids: Sequence[int], predictor: Predictor, report: ChunkReport, owner: str
    ) -> tuple[list[ClaimedStudy], set[int], bool]:
        """Claim what can be claimed: (the claimed studies, every id the claim decided on,
        whether it went one at a time)."""
        settings = self.settings
        started = time.perf_counter()
        with self._unit_of_work() as session:
            claim = status.claim(
                session,
                study_ids,
                owner=owner,
                lease_until=utcnow() + timedelta(seconds=settings.lease_seconds),
                model_version=predictor.version,
                model_trained=predictor.trained,
                max_deliveries=settings.max_deliveries,
                give_up=f"gave up after {settings.max_deliveries} deliveries: the worker died "
                f"or hit the {settings.task_time_limit}s time limit each time",
                held_elsewhere=lambda study, now: held_elsewhere(study, owner, now),
            )
            claimed = [
                ClaimedStudy(
                    s.id,
                    s.job_id,
                    s.filename,
                    s.input_png,
                    s.label_png,
                    spacing_of(s.spacing_row_mm, s.spacing_col_mm),
                )
                for s in claim.studies
            ]
        report.skipped += claim.skipped
        report.failed += claim.failed
        report.add("claim", time.perf_counter() - started)
        logger.info("chunk claimed %s", [c.id for c in claimed])
        handled = {c.id for c in claimed} | set(claim.skipped) | set(claim.failed)
        return claimed, handled, claim.interrupted

    def _segment(
        self,
        claimed: Sequence[ClaimedStudy],
        predictor: Predictor,
        report: ChunkReport,
        owner: str,
    ) -> None:
        """Decode, then predict, find and store batch by batch."""
        job_ids = sorted({c.job_id for c in claimed})
        with ThreadPoolExecutor(max_workers=self.settings.io_threads_per_process) as pool:
            started = time.perf_counter()
            pending: list[Outcome] = []
            good: list[Decoded] = []
            for decoded in pool.map(self._decode, claimed):
                if isinstance(decoded, Outcome):
                    pending.append(decoded)
                else:
                    good.append(decoded)
            report.add("decode", time.perf_counter() - started)
            # the studies still to compute that are still this worker's (a cancelled one
            # leaves it after the store that sees it); the batches skip the others
            waiting = {d.study.id for d in good}
            batches = self._predict(predictor, [d.image for d in good], waiting, good)
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                seconds = time.perf_counter() - started
                report.add("predict", seconds)
                if batch is None:
                    break
                waiting -= {good[i].study.id for i, _ in batch}
                started = time.perf_counter()
                share = [seconds / len(batch)] * len(batch)  # each study's share of the batch
                pending += pool.map(
                    self._find,
                    [good[i] for i, _ in batch],
                    [p for _, p in batch],
                    [predictor] * len(batch),
                    share,
                )
                report.add("findings", time.perf_counter() - started)
                still = self._store(pending, job_ids, waiting, owner, report)
                report.dropped += sorted(waiting - still)
                waiting &= still
                pending = []
            if pending:  # every study failed to decode
                self._store(pending, job_ids, set(), owner, report)

    def _store(
        self,
        outcomes: Sequence[Outcome],
        job_ids: Sequence[int],
        waiting: set[int],
        owner: str,
        report: ChunkReport,
    ) -> set[int]:
        """End these studies and store their results in one transaction; the studies
        among `waiting` that are still this worker's."""
        started = time.perf_counter()
        with self._unit_of_work() as session:
            done = status.finish(
                session,
                {o.study_id: o.error for o in outcomes},
                job_ids,
                rejected={o.study_id for o in outcomes if o.rejected},
            )
            succeeded = set(done.succeeded)
            studies_repo.store_results(
                session,
                [o.values for o in outcomes if o.study_id in succeeded],
                [row for o in outcomes if o.study_id in succeeded for row in o.lesions],
            )
            if done.succeeded and any(e.export for e in self.settings.pacs_endpoints):
                from archive.pacs_export import queue_exports  # PACS studies' results back

                queue_exports(session, self.settings, study_ids=done.succeeded)
            still = status.still_running(session, sorted(waiting), owner)
        report.succeeded += done.succeeded
        report.failed += done.failed
        report.rejected += done.rejected
        report.skipped += done.skipped  # cancelled, deleted or finished elsewhere
        report.add("store", time.perf_counter() - started)
        return still

    def _decode(self, item: ClaimedStudy) -> Decoded | Outcome:
        """The study's image and label arrays, or the outcome of an unusable study: failed
        (not a usable PNG) or rejected (not a whole-body MIP-PET: `model/quality.py`)."""
        from model import quality
        from model.png import ImageLimits, InvalidImage
        from model.preprocessing import decode_image, decode_mask

        limits = ImageLimits(
            max_side=self.settings.max_image_side, max_pixels=self.settings.max_image_pixels
        )
        try:
            image = decode_image(item.input_png, limits)
        except InvalidImage as exc:
            return Outcome(item.id, error=f"{item.filename}: {exc}")
        if self.settings.input_check:
            reason = quality.check(image)
            if reason is not None:
                return Outcome(item.id, error=f"{item.filename}: {reason}", rejected=True)
        if item.label_png is None:
            return Decoded(item, image, None)
        try:
            return Decoded(item, image, decode_mask(item.label_png, expected_shape=image.shape))
        except InvalidImage as exc:
            return Outcome(item.id, error=f"label of {item.filename}: {exc}")

    @staticmethod
    def _predict(
        predictor: Predictor, images: list[np.ndarray], ours: set[int], good: list[Decoded]
    ) -> Iterator[list[tuple[int, Prediction | str]]]:
        """Each batch's (index, prediction), leaving out the studies no longer ours; if a
        batch fails, the images not yet done are retried one by one, so one image the
        network cannot take fails alone."""
        done: set[int] = set()

        def skip(i: int) -> bool:
            return good[i].study.id not in ours

        try:
            for batch in predictor.iter_batches(images, skip):
                done.update(p.index for p in batch)
                yield [(p.index, p) for p in batch]
            return
        except Exception:
            logger.exception("batch prediction failed; retrying one image at a time")
        for i, image in enumerate(images):
            if i in done or skip(i):
                continue
            try:
                (prediction,) = next(predictor.iter_batches([image]))
                yield [(i, prediction)]
            except Exception as exc:  # one image the network cannot take
                yield [(i, f"inference failed: {type(exc).__name__}: {exc}")]

    @staticmethod
    def _find(
        study: Decoded, prediction: Prediction | str, predictor: Predictor, seconds: float
    ) -> Outcome:
        """The findings and mask PNG of one predicted study."""
        from model.findings import find
        from model.lesions import Spacing

        study_id = study.study.id
        if isinstance(prediction, str):
            return Outcome(study_id, error=prediction)
        try:
            spacing = Spacing(*study.study.spacing) if study.study.spacing is not None else None
            findings = find(
                study.image,
                prediction.levels,
                prediction.probabilities,
                predictor.rule,
                spacing,
                study.label,
            )
            return result_rows(study, findings, predictor.version, seconds)
        except Exception as exc:
            logger.exception("findings failed for study %s", study_id)
            return Outcome(study_id, error=f"post-processing failed: {type(exc).__name__}: {exc}")
