"""The worker's Prometheus metrics, recorded from the reports of chunks and recovery passes.

=========================================== ===========================================
``tumorseg_worker_studies_total``           studies a worker finished, by ``outcome``
                                            (``succeeded``, ``failed``) and
                                            ``model_version`` (``unknown`` for a chunk that
                                            timed out or crashed before its report)
``tumorseg_worker_chunk_seconds``           histogram: seconds per chunk task, by
                                            ``model_version``
``tumorseg_worker_predict_seconds``         histogram: seconds a chunk spent in the network
                                            (batches, resampling, post-processing), by
                                            ``model_version``
``tumorseg_worker_leases_recovered_total``  running studies that recovery passes re-queued
                                            because their worker's lease lapsed (or its node
                                            started again)
``tumorseg_worker_studies_resent_total``    queued studies that recovery passes sent again
                                            because their task message was lost
=========================================== ===========================================

Every process of a node records here; with ``TUMORSEG_WORKER_METRICS_PORT`` set, the
pool processes write them to files that the node's exporter adds up
(``worker/exporter.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:  # the reports' modules import this one
    from worker.reaper import ReapReport
    from worker.segmentation import ChunkReport

#: ``model_version`` of studies failed without a chunk report (time limit, crash).
UNKNOWN_VERSION = "unknown"
#: A chunk of 32 takes seconds on a GPU and minutes on a CPU, up to the task time limit.
CHUNK_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
PREDICT_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

STUDIES = Counter(
    "tumorseg_worker_studies_total",
    "Studies a worker finished, by outcome and model version.",
    ["outcome", "model_version"],
)
CHUNK_SECONDS = Histogram(
    "tumorseg_worker_chunk_seconds",
    "Seconds per chunk task, from the claim to the stored results.",
    ["model_version"],
    buckets=CHUNK_BUCKETS,
)
PREDICT_SECONDS = Histogram(
    "tumorseg_worker_predict_seconds",
    "Seconds a chunk spent in the network (batches, resampling, post-processing).",
    ["model_version"],
    buckets=PREDICT_BUCKETS,
)
LEASES_RECOVERED = Counter(
    "tumorseg_worker_leases_recovered_total",
    "Running studies re-queued by recovery passes: their worker's lease lapsed or its "
    "node started again.",
)
STUDIES_RESENT = Counter(
    "tumorseg_worker_studies_resent_total",
    "Queued studies sent again by recovery passes: their task message was lost.",
)


def record_chunk(report: ChunkReport) -> None:
    """Count a chunk's studies by outcome and time it (the network's share apart)."""
    version = report.model_version
    STUDIES.labels("succeeded", version).inc(len(report.succeeded))
    STUDIES.labels("failed", version).inc(len(report.failed))
    CHUNK_SECONDS.labels(version).observe(report.seconds)
    if "predict" in report.phases:  # absent when the chunk claimed nothing
        PREDICT_SECONDS.labels(version).observe(report.phases["predict"])


def record_unfinished(failed: int) -> None:
    """Count the studies of a chunk that timed out or crashed and failed them."""
    STUDIES.labels("failed", UNKNOWN_VERSION).inc(failed)


def record_recovery(report: ReapReport) -> None:
    """Count what a recovery pass took back."""
    LEASES_RECOVERED.inc(len(report.requeued_running))
    STUDIES_RESENT.inc(len(report.resent_queued))
