"""Pydantic response and request models of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class StudyMetrics(BaseModel):
    """Per-study numbers from the model version that produced the mask."""

    model_version: str
    height: int
    width: int
    tumor_pixels: int
    tumor_fraction: float | None = Field(description="Tumor pixels / body pixels.")
    lesions: int = Field(description="Connected tumor regions.")
    largest_lesion_px: int
    uptake_mean: float | None = Field(description="Mean uptake in the mask, 0..1.")
    uptake_max: float | None
    dice: float | None = Field(description="Against the label; None without one.")
    precision: float | None
    recall: float | None
    inference_seconds: float | None


class StudyOut(BaseModel):
    """One study of a job."""

    id: int
    job_id: int
    position: int
    filename: str
    label_filename: str | None
    status: str = Field(description="queued|running|succeeded|failed|cancelled")
    error: str | None
    attempts: int
    metrics: StudyMetrics | None
    mask_url: str | None
    overlay_url: str | None


class JobTimings(BaseModel):
    """When the job was created, started and finished, and the durations in seconds."""

    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_seconds: float | None
    running_seconds: float | None
    total_seconds: float | None


class JobAggregates(BaseModel):
    """Job-level numbers over its studies."""

    labelled_studies: int = Field(description="Succeeded studies that had a label.")
    mean_dice: float | None = Field(description="Mean Dice over labelled studies.")


class JobSummary(BaseModel):
    """A job without its studies."""

    id: int
    status: str = Field(description="queued|running|succeeded|partially_failed|failed|cancelled")
    total: int
    counts: dict[str, int] = Field(description="Number of studies in each study status.")
    progress: float = Field(description="Finished studies / all studies, 0..1.")
    model_version: str | None
    model_trained: bool | None
    warning: str | None = Field(description="Set (loudly) when the model is untrained.")
    error: str | None
    timings: JobTimings


class JobOut(JobSummary):
    """A job with aggregates and all its studies."""

    aggregates: JobAggregates
    studies: list[StudyOut]


class JobPage(BaseModel):
    """One page of jobs."""

    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class PredictRequest(BaseModel):
    """DM i AI 2023 request: one base64-encoded PNG."""

    img: str = Field(description="Base64-encoded PNG of a MIP-PET study.")


class PredictResponse(BaseModel):
    """DM i AI 2023 response: RGB mask PNG of the input's size, 0/255, equal channels."""

    img: str


class Health(BaseModel):
    """Liveness."""

    status: str


class Readiness(BaseModel):
    """Readiness with the result of each check."""

    status: str
    checks: dict[str, str]
