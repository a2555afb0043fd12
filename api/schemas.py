"""Pydantic response and request models of the HTTP API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

#: What the uptake figures are: every study reaches the model as a PNG rendering.
RELATIVE_UPTAKE = (
    "relative uptake, the PNG's gray inverted, which saturates at 1 where the rendering "
    "clips: compare within a study only, not across studies (no SUV; a PACS study's "
    "SUVmax is in the structured report sent back to it)"
)


class StudyMetrics(BaseModel):
    """Per-study numbers from the model version that produced the mask."""

    model_version: str
    height: int
    width: int
    tumor_pixels: int
    tumor_fraction: float | None = Field(description="Tumor pixels / body pixels.")
    lesions: int = Field(description="Connected tumor regions.")
    largest_lesion_px: int
    uptake_mean: float | None = Field(
        description="Mean uptake in the mask, 0..1: " + RELATIVE_UPTAKE
    )
    uptake_max: float | None = Field(
        description="Highest uptake in the mask, 0..1: " + RELATIVE_UPTAKE
    )
    dice: float | None = Field(description="Against the label; None without one.")
    precision: float | None
    recall: float | None
    inference_seconds: float | None = Field(
        description="The study's share of the network's time: its batch's seconds over the "
        "studies in the batch."
    )


class StudyBiomarkers(BaseModel):
    """MIP tumor-burden biomarkers of one study (docs/BIOMARKERS.md); cm values need the
    pixel spacing, and are None without it."""

    tumor_area_px: int = Field(description="Predicted tumor pixels (the sTMTV surrogate).")
    tumor_area_cm2: float | None
    lesion_count: int
    sdmax_px: float | None = Field(
        description="Largest distance between two lesions' centroids (0 with fewer than two)."
    )
    sdmax_cm: float | None
    sdmax_per_height: float | None = Field(description="sDmax / the imaged body's height.")
    body_height_px: int | None
    body_width_px: int | None
    body_height_cm: float | None
    body_width_cm: float | None


class LesionOut(BaseModel):
    """One predicted lesion (docs/BIOMARKERS.md); pixels of the input PNG, row 0 on top."""

    number: int = Field(description="1 for the largest, then by decreasing area.")
    area_px: int
    area_mm2: float | None
    centroid_row: float
    centroid_col: float
    bbox: list[int] = Field(description="row0, col0, row1, col1; the ends excluded.")
    relative_height: float | None = Field(
        description="Centroid's height in the body: 0 at its top, 1 at its bottom."
    )
    peak_uptake: float = Field(description="Highest uptake in the lesion, 0..1: " + RELATIVE_UPTAKE)
    mean_uptake: float = Field(description="Mean uptake in the lesion, 0..1: " + RELATIVE_UPTAKE)
    peak_probability: float | None = Field(description="The model's highest probability in it.")


class PacsObjectOut(BaseModel):
    """One DICOM object of an export, with its UIDs (the same at every attempt)."""

    kind: str = Field(description="sc (the MIP), seg, sr (measurements) or overlay")
    series_instance_uid: str
    sop_instance_uid: str
    stored: bool = Field(description="The PACS has stored it.")


class PacsExportOut(BaseModel):
    """The results of one model version sent back (or to be sent) to the study's PACS."""

    model_version: str
    state: str = Field(description="pending|sent")
    attempts: int = Field(description="Failed attempts so far.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="While pending.")
    sent_at: datetime | None
    objects: list[PacsObjectOut]


class PacsOriginOut(BaseModel):
    """Where a study from a PACS came from, its SUV factor and what was sent back."""

    endpoint: str
    study_instance_uid: str
    series_instance_uid: str
    identity: str = Field(description="SHA-256 of the series UID and its sorted instance UIDs.")
    instances: int
    units: str | None = Field(description="The series' Units (0054,1001).")
    suv_factor: float | None = Field(
        description="Body-weight SUV per unit of the series' values; null: no SUV."
    )
    suv_note: str = Field(description="How the SUV factor was computed, or why there is none.")
    exports: list[PacsExportOut]


class StudyOut(BaseModel):
    """One study of a job."""

    id: int
    job_id: int
    position: int
    filename: str
    label_filename: str | None
    status: str = Field(
        description="queued|running|succeeded|failed|cancelled|rejected (rejected: the input "
        "check found no whole-body MIP-PET; `error` says why)"
    )
    error: str | None
    attempts: int = Field(description="Deliveries that claimed it (capped by max_deliveries).")
    requeues: int = Field(
        description="Times the recovery sent it again: its worker died or its task was lost."
    )
    worker: str | None = Field(description="While running: the worker (node:pid) holding it.")
    spacing_mm: list[float] | None = Field(
        description="Pixel size in mm (rows, columns), when known."
    )
    metrics: StudyMetrics | None
    biomarkers: StudyBiomarkers | None
    lesions: list[LesionOut] | None = Field(
        default=None, description="In GET /v1/studies/{id} only; null in job views."
    )
    pacs: PacsOriginOut | None = Field(
        default=None,
        description="In GET /v1/studies/{id} only: the PACS a study came from and what was "
        "sent back; null for other studies and in job views.",
    )
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
    requeued_studies: int = Field(
        description="Studies the recovery sent again (a dead worker, a lost task)."
    )


class JobSummary(BaseModel):
    """A job without its studies."""

    id: int
    name: str | None = Field(
        default=None,
        description="What the submitter called the job; 'predict' for POST /predict jobs.",
    )
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
    """A job with aggregates and all its studies (``studies`` is null when the request
    asked for the status alone with ``?studies=false``)."""

    aggregates: JobAggregates
    studies: list[StudyOut] | None


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


class ErrorOut(BaseModel):
    """An error: a sentence naming the problem (a list for request-shape errors)."""

    detail: str | list[dict[str, Any]]


#: Largest row id (SQL INTEGER); bigger path ids are refused with 422, not sent to the DB.
MAX_ID = 2**31 - 1


def in_range(low: int | date, high: int | date) -> WrapValidator:
    """A validator that refuses a value outside ``low``..``high`` (both included) with a
    message naming the whole range (pydantic's own ``ge``/``le`` name only the end that
    was crossed). Put it after the ``Query``/``Path`` that carries the same bounds for the
    OpenAPI document.

    Args:
        low: The least value allowed.
        high: The greatest value allowed.
    """

    def out_of_range() -> PydanticCustomError:
        return PydanticCustomError(
            "out_of_range",
            "Input should be from {low} to {high}",
            {"low": str(low), "high": str(high)},
        )

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            out = handler(value)
        except ValidationError as exc:
            if any(e["type"] in _BOUND_ERRORS for e in exc.errors()):
                raise out_of_range() from None
            raise
        if out is not None and not low <= out <= high:
            raise out_of_range()
        return out

    return WrapValidator(check)


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error status codes, all with :class:`ErrorOut`."""
    return {code: {"model": ErrorOut} for code in codes}


def openapi_link(
    path: str, method: str, parameter: str, value: str, description: str
) -> dict[str, Any]:
    """An OpenAPI link from an answer to the operation at ``path``.

    Args:
        path: The target's path template, as the OpenAPI document lists it.
        method: The target's method, lower case.
        parameter: The target's path parameter that the link fills.
        value: A runtime expression for it, e.g. ``$response.body#/id``.
        description: What the target gives.
    """
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": {parameter: value},
        "description": description,
    }


#: Where a submitted job's answer leads: its status, cancellation and tables, and its
#: first study with that study's images (OpenAPI links, which clients and fuzzers follow).
JOB_LINKS = {
    "GetJob": openapi_link("/v1/jobs/{job_id}", "get", "job_id", "$response.body#/id", "The job."),
    "CancelJob": openapi_link(
        "/v1/jobs/{job_id}", "delete", "job_id", "$response.body#/id", "Cancel the job."
    ),
    "GetResultsCsv": openapi_link(
        "/v1/jobs/{job_id}/results.csv", "get", "job_id", "$response.body#/id", "Per study."
    ),
    "GetLesionsCsv": openapi_link(
        "/v1/jobs/{job_id}/lesions.csv", "get", "job_id", "$response.body#/id", "Per lesion."
    ),
    **{
        f"GetFirstStudy{name}": openapi_link(
            f"/v1/studies/{{study_id}}{suffix}",
            "get",
            "study_id",
            "$response.body#/studies/0/id",
            f"The first study{suffix and ': ' + suffix[1:]}.",
        )
        for name, suffix in (
            ("", ""),
            ("Mask", "/mask.png"),
            ("Overlay", "/overlay.png"),
            ("Comparison", "/comparison.png"),
        )
    },
}


class NightlyStudy(BaseModel):
    """One archive study of the night."""

    study_id: int
    job_id: int
    path: str = Field(description="Path of the study relative to its archive root.")
    kind: str = Field(description="png|nifti|dicom")
    content_hash: str
    status: str
    flags: list[str] = Field(description="failed, unfinished, cancelled, lesions")
    model_version: str | None
    lesions: int | None = Field(description="Connected tumor regions found.")
    largest_lesion_px: int | None
    tumor_pixels: int | None
    tumor_fraction: float | None
    uptake_max: float | None
    error: str | None


class JobTables(BaseModel):
    """Where one job's tables are (docs/BIOMARKERS.md)."""

    job_id: int
    results_csv: str = Field(description="One row per study: metrics and MIP biomarkers.")
    lesions_csv: str = Field(description="One row per predicted lesion.")


class NightlyReportOut(BaseModel):
    """The archive studies of one night (archive jobs created that day) with totals."""

    date: str
    start: str = Field(description="Start of the day in the archive time zone.")
    end: str
    summary: dict[str, Any] = Field(
        description="studies, succeeded, failed, unfinished, with_lesions, largest lesion."
    )
    tables: list[JobTables] = Field(description="The night's jobs and their CSV tables.")
    studies: list[NightlyStudy]
