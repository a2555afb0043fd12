"""The service logic of one chunk: decode, predict in batches, measure, store.

A chunk is handled in three steps so that no database transaction stays open while the
model runs:

1. *claim* (one transaction): skip studies that are cancelled, failed, already done
   with the current model version or held by another live worker's lease; fail those
   past the delivery cap; mark the rest running under this process's lease, which a
   heartbeat thread renews until the chunk ends (``worker/leases.py``).
2. *compute* (no transaction): decode each study (a bad one is failed with a clear
   message and the others go on), predict the good ones as true batches, compute metrics,
   lesions and biomarkers, and encode the mask PNG (overlays are drawn by the API when
   asked for).
3. *store* (one transaction): upsert every result of the chunk, replace its lesion rows
   and update the job.

A chunk that an earlier delivery claimed and never stored (its process was killed, maybe
by one of its studies) is done one study per claim-compute-store instead, so that only
the study that kills its worker uses up its deliveries, and its chunk-mates are done.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from core.current_model import current_model
from core.dispatch import Dispatcher
from db import status
from db.models import BIOMARKER_FIELDS, METRIC_FIELDS, utcnow
from db.repositories import studies as studies_repo
from worker.leases import Heartbeat, held_elsewhere, lease_owner
from worker.predictor_cache import PredictorCache

if TYPE_CHECKING:
    import numpy as np

    from model.predictor import Predictor

    #: A predicted mask (bool) and its probabilities as uint8, round(255 × p).
    Prediction = tuple[np.ndarray, np.ndarray]

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
class Outcome:
    """What happened to one claimed study: its result's values and its lesion rows."""

    study_id: int
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    lesions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChunkReport:
    """Summary of one chunk, returned by the task (and logged as JSON)."""

    model_version: str
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: Where the seconds went: claim (with the promoted-model check), decode (the chunk's
    #: PNGs), predict (network, resampling, post-processing), finish (metrics and encoding
    #: still running after the last batch) and store.
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "model_version": self.model_version,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
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


def lesion_row(study_id: int, model_version: str, lesion: dict[str, Any]) -> dict[str, Any]:
    """Column values of a ``db.models.Lesion`` from ``model.lesions.Lesion.as_dict()``."""
    row = {k: _finite(v) for k, v in lesion.items() if k != "bbox"}
    row["bbox_row0"], row["bbox_col0"], row["bbox_row1"], row["bbox_col1"] = lesion["bbox"]
    return {"study_id": study_id, "model_version": model_version, **row}


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
        )

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Its units of work announce the jobs they finish (``core/dispatch.py``); one on
        the configured broker, made at first use, unless one was given."""
        return self._dispatcher or Dispatcher(self.settings)

    # -- model ---------------------------------------------------------------------
    def current_predictor(self) -> Predictor:
        """The predictor of the current model (reloaded when a promotion changed it)."""
        with self.dispatcher.unit_of_work() as session:
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
            Which studies succeeded, failed or were skipped.
        """
        owner = owner or lease_owner()
        with Heartbeat(self.settings, study_ids, owner):
            return self._run_chunk(study_ids, owner)

    def _run_chunk(self, study_ids: Sequence[int], owner: str) -> ChunkReport:
        started = time.perf_counter()
        predictor = self.current_predictor()
        report = ChunkReport(model_version=predictor.version)
        with self.dispatcher.unit_of_work() as session:
            interrupted = studies_repo.interrupted_studies(session, study_ids)
        report.phases["claim"] = time.perf_counter() - started
        if interrupted:
            # An earlier delivery died holding these (a crash, an OOM kill, the hard time
            # limit), maybe because of one of them: one study per claim from here, so the
            # culprit uses up its own deliveries and the others are done.
            logger.warning(
                "chunk %s: %s were claimed before and never finished; one study at a time",
                list(study_ids),
                interrupted,
            )
            for study_id in study_ids:
                self._segment([study_id], predictor, report, owner)
        else:
            self._segment(study_ids, predictor, report, owner)
        report.seconds = time.perf_counter() - started
        logger.info("chunk %s: %s", list(study_ids), json.dumps(report.as_dict()))
        return report

    def _segment(
        self, study_ids: Sequence[int], predictor: Predictor, report: ChunkReport, owner: str
    ) -> None:
        """Claim, compute and store these studies; the phases' seconds add to `report`."""
        phases: dict[str, float] = {}
        started = time.perf_counter()
        claimed = self._claim(study_ids, predictor, report, owner)
        phases["claim"] = time.perf_counter() - started
        logger.info("chunk claimed %s", [c.id for c in claimed])
        if claimed:
            outcomes = self._compute(predictor, claimed, phases)
            stored = time.perf_counter()
            self._store(claimed, outcomes, report)
            phases["store"] = time.perf_counter() - stored
        for phase, seconds in phases.items():
            report.phases[phase] = report.phases.get(phase, 0.0) + seconds

    def fail_unfinished(self, study_ids: Sequence[int], message: str) -> int:
        """Fail the studies among ``study_ids`` that are still queued or running.

        Used when a task dies in a way it can report (soft time limit, internal error),
        so that no job is left waiting for ever.
        """
        with self.dispatcher.unit_of_work() as session:
            return status.fail_unfinished(session, study_ids, message)

    # -- steps ---------------------------------------------------------------------
    def _claim(
        self, study_ids: Sequence[int], predictor: Predictor, report: ChunkReport, owner: str
    ) -> list[ClaimedStudy]:
        settings = self.settings
        with self.dispatcher.unit_of_work() as session:
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
        return claimed

    def _compute(
        self, predictor: Predictor, claimed: Sequence[ClaimedStudy], phases: dict[str, float]
    ) -> list[Outcome]:
        """Decode, predict and measure (metrics and the mask PNG); decoding and measuring
        run in a thread pool. On a GPU the studies are measured as each batch ends, beside
        the next batch; on a CPU after the last batch, since the network already uses every
        core there and host work beside it only slows it (bench/host_overlap.py).
        Seconds spent per phase are added to `phases`."""
        outcomes: dict[int, Outcome] = {}
        good: list[tuple[ClaimedStudy, np.ndarray, np.ndarray | None]] = []
        beside_network = predictor.device.type != "cpu"
        decode_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.settings.io_threads_per_process) as pool:
            for item, decoded in zip(claimed, pool.map(self._decode, claimed), strict=True):
                if isinstance(decoded, str):
                    outcomes[item.id] = Outcome(item.id, error=decoded)
                else:
                    good.append((item, *decoded))
            started = time.perf_counter()
            phases["decode"] = started - decode_started
            pending: list[tuple[int, Future[Outcome]]] = []
            masks: list[tuple[int, Prediction]] = []
            for i, prediction in self._predict(predictor, [img for _, img, _ in good]):
                if isinstance(prediction, str):
                    outcomes[good[i][0].id] = Outcome(good[i][0].id, error=prediction)
                elif beside_network:
                    pending.append(self._submit_measure(pool, good[i], prediction, predictor))
                else:
                    masks.append((i, prediction))
            predicted = time.perf_counter()
            phases["predict"] = predicted - started
            per_image = (predicted - started) / max(len(good), 1)
            pending += [self._submit_measure(pool, good[i], p, predictor) for i, p in masks]
            for study_id, future in pending:
                outcome = outcomes[study_id] = future.result()
                if outcome.error is None:
                    outcome.values["inference_seconds"] = per_image
            phases["finish"] = time.perf_counter() - predicted
        return [outcomes[item.id] for item in claimed]

    def _submit_measure(
        self,
        pool: ThreadPoolExecutor,
        study: tuple[ClaimedStudy, np.ndarray, np.ndarray | None],
        prediction: Prediction,
        predictor: Predictor,
    ) -> tuple[int, Future[Outcome]]:
        item, image, label = study
        return item.id, pool.submit(self._measure, item, image, label, prediction, predictor)

    def _decode(self, item: ClaimedStudy) -> tuple[np.ndarray, np.ndarray | None] | str:
        """The study's image and label arrays, or the reason they are unusable."""
        from model.png import ImageLimits, InvalidImage
        from model.preprocessing import decode_image, decode_mask

        limits = ImageLimits(
            max_side=self.settings.max_image_side, max_pixels=self.settings.max_image_pixels
        )
        try:
            image = decode_image(item.input_png, limits)
        except InvalidImage as exc:
            return f"{item.filename}: {exc}"
        if item.label_png is None:
            return image, None
        try:
            return image, decode_mask(item.label_png, expected_shape=image.shape)
        except InvalidImage as exc:
            return f"label of {item.filename}: {exc}"

    @staticmethod
    def _predict(
        predictor: Predictor, images: list[np.ndarray]
    ) -> Iterator[tuple[int, Prediction | str]]:
        """(index, (mask, uint8 probabilities)) as each batch ends; if a batch fails, the
        images not yet done are retried one by one, so one image the network cannot take
        fails alone."""
        done: set[int] = set()
        try:
            for i, mask, quantized in predictor.iter_predict_with_probabilities(images):
                done.add(i)
                yield i, (mask, quantized)
            return
        except Exception:
            logger.exception("batch prediction failed; retrying one image at a time")
        for i, image in enumerate(images):
            if i in done:
                continue
            try:
                _, mask, quantized = next(predictor.iter_predict_with_probabilities([image]))
                yield i, (mask, quantized)
            except Exception as exc:  # one image the network cannot take
                yield i, f"inference failed: {type(exc).__name__}: {exc}"

    @staticmethod
    def _measure(
        item: ClaimedStudy,
        image: np.ndarray,
        label: np.ndarray | None,
        prediction: Prediction,
        predictor: Predictor,
    ) -> Outcome:
        """Metrics, lesions, biomarkers and the mask PNG of one predicted study."""
        from model.biomarkers import mip_biomarkers
        from model.lesions import Spacing, body_extent, find_lesions
        from model.metrics import study_metrics
        from model.png import encode_mask_png

        mask, quantized = prediction
        try:
            metrics = {k: _finite(v) for k, v in study_metrics(image, mask, label).items()}
            spacing = Spacing(*item.spacing) if item.spacing is not None else None
            body = body_extent(image)
            lesions = find_lesions(mask, image, quantized, spacing, body, probability_scale=1 / 255)
            biomarkers = mip_biomarkers(lesions, body, spacing).as_dict()
            values: dict[str, Any] = {
                "study_id": item.id,
                "model_version": predictor.version,
                "mask_png": encode_mask_png(mask),
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
            }
        except Exception as exc:
            logger.exception("metrics/encoding failed for study %s", item.id)
            return Outcome(item.id, error=f"post-processing failed: {type(exc).__name__}: {exc}")
        for key in METRIC_FIELDS:
            values[key] = metrics.get(key)
        for key in BIOMARKER_FIELDS:
            values[key] = _finite(biomarkers[key])
        rows = [lesion_row(item.id, predictor.version, lesion.as_dict()) for lesion in lesions]
        return Outcome(item.id, values=values, lesions=rows)

    def _store(
        self, claimed: Sequence[ClaimedStudy], outcomes: Sequence[Outcome], report: ChunkReport
    ) -> None:
        with self.dispatcher.unit_of_work() as session:
            done = status.finish(session, {o.study_id: o.error for o in outcomes})
            succeeded = set(done.succeeded)
            results = [o.values for o in outcomes if o.study_id in succeeded]
            studies_repo.upsert_results(session, results)
            studies_repo.replace_lesions(
                session,
                [(r["study_id"], r["model_version"]) for r in results],
                [row for o in outcomes if o.study_id in succeeded for row in o.lesions],
            )
        report.succeeded += done.succeeded
        report.failed += done.failed
        report.skipped += done.skipped  # deleted or finished elsewhere
