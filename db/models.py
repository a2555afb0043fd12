"""Typed SQLAlchemy 2 ORM models of the service.

A *job* is one submission; it owns *studies* (one input image each, plus an optional
label). A *result* is the output of one model version for one study; ``(study_id,
model_version)`` is unique, so a redelivered task updates rather than duplicates.
*Lesions* are one result's predicted lesions, one row each, with its per-study MIP
biomarkers on the result (``docs/BIOMARKERS.md``). *Model versions* record the artifacts
known to the service and which one is promoted.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class JobStatus(enum.StrEnum):
    """Lifecycle of a job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Not segmented: the input check found no whole-body MIP-PET (``model/quality.py``).
    REJECTED = "rejected"


class StudyStatus(enum.StrEnum):
    """Lifecycle of one study."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Not segmented: the input check found no whole-body MIP-PET (``model/quality.py``).
    REJECTED = "rejected"


UNFINISHED_STUDY = (StudyStatus.QUEUED, StudyStatus.RUNNING)


class JobSource(enum.StrEnum):
    """Where a job came from."""

    API = "api"  # POST /v1/jobs
    PREDICT = "predict"  # POST /predict
    ARCHIVE = "archive"  # a hospital-archive scan (nightly or `tumorseg archive scan`)


#: Longest job name, characters.
JOB_NAME_LENGTH = 120

#: Tenant of jobs created before API keys existed, and of keys created without one.
DEFAULT_TENANT = "default"


class Base(DeclarativeBase):
    """Declarative base of all tables."""


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Job(Base):
    """One submission of studies."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED, index=True
    )
    queue: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(128))
    model_trained: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tenant: Mapped[str | None] = mapped_column(
        String(64), default=DEFAULT_TENANT, server_default=text("'default'"), index=True
    )

    source: Mapped[str] = mapped_column(
        String(16), default=JobSource.API, server_default=text("'api'"), index=True
    )
    #: What the submitter called the job (``POST /v1/jobs`` form field ``name``); "predict"
    #: for ``POST /predict``, "archive scan" for the archive's jobs; None when not given.
    name: Mapped[str | None] = mapped_column(String(JOB_NAME_LENGTH))

    studies: Mapped[list[Study]] = relationship(
        back_populates="job", order_by="Study.position", cascade="all, delete-orphan"
    )


class Study(Base):
    """One input image of a job (bytes kept in the DB) and its processing state."""

    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_job_status", "job_id", "status"),
        Index("ix_studies_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    label_filename: Mapped[str | None] = mapped_column(String(255))
    input_png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    label_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    status: Mapped[StudyStatus] = mapped_column(
        _enum(StudyStatus, "study_status"), default=StudyStatus.QUEUED
    )
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: While running: the worker process that claimed it (``node:pid``) and until when
    #: its claim holds unless renewed (see ``worker/leases.py``); cleared when it ends.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Times the recovery (``worker/reaper.py``) sent it again after a lost worker or task.
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Pixel size in mm (rows, columns) when known: studies rendered from NIfTI or DICOM
    #: carry it, a PNG upload may give it. Areas in mm² and distances in cm need it.
    spacing_row_mm: Mapped[float | None] = mapped_column(Float)
    spacing_col_mm: Mapped[float | None] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="studies")
    results: Mapped[list[Result]] = relationship(
        back_populates="study", cascade="all, delete-orphan", order_by="Result.id"
    )
    lesions: Mapped[list[Lesion]] = relationship(
        cascade="all, delete-orphan", order_by="Lesion.id", passive_deletes=True
    )


class Result(Base):
    """The output of one model version for one study."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("study_id", "model_version", name="uq_results_study_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(128))
    mask_png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    tumor_pixels: Mapped[int] = mapped_column(Integer)
    tumor_fraction: Mapped[float | None] = mapped_column(Float)
    lesions: Mapped[int] = mapped_column(Integer)
    largest_lesion_px: Mapped[int] = mapped_column(Integer)
    uptake_mean: Mapped[float | None] = mapped_column(Float)
    uptake_max: Mapped[float | None] = mapped_column(Float)
    dice: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[float | None] = mapped_column(Float)
    recall: Mapped[float | None] = mapped_column(Float)
    inference_seconds: Mapped[float | None] = mapped_column(Float)
    # MIP biomarkers (``model/biomarkers.py``); the area in pixels is ``tumor_pixels`` and
    # the lesion count ``lesions``. None in results stored before they existed.
    tumor_area_cm2: Mapped[float | None] = mapped_column(Float)
    sdmax_px: Mapped[float | None] = mapped_column(Float)
    sdmax_cm: Mapped[float | None] = mapped_column(Float)
    sdmax_per_height: Mapped[float | None] = mapped_column(Float)
    body_height_px: Mapped[int | None] = mapped_column(Integer)
    body_width_px: Mapped[int | None] = mapped_column(Integer)
    body_height_cm: Mapped[float | None] = mapped_column(Float)
    body_width_cm: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    study: Mapped[Study] = relationship(back_populates="results")


class Lesion(Base):
    """One predicted lesion of one model version's result for a study.

    The fields are ``model.lesions.Lesion``'s (``docs/BIOMARKERS.md``); pixels are the
    input PNG's, row 0 at the top. A redelivered study replaces its version's rows.
    """

    __tablename__ = "lesions"
    __table_args__ = (
        UniqueConstraint(
            "study_id", "model_version", "number", name="uq_lesions_study_model_number"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(128))
    number: Mapped[int] = mapped_column(Integer)
    area_px: Mapped[int] = mapped_column(Integer)
    area_mm2: Mapped[float | None] = mapped_column(Float)
    centroid_row: Mapped[float] = mapped_column(Float)
    centroid_col: Mapped[float] = mapped_column(Float)
    bbox_row0: Mapped[int] = mapped_column(Integer)
    bbox_col0: Mapped[int] = mapped_column(Integer)
    bbox_row1: Mapped[int] = mapped_column(Integer)
    bbox_col1: Mapped[int] = mapped_column(Integer)
    relative_height: Mapped[float | None] = mapped_column(Float)
    peak_uptake: Mapped[float] = mapped_column(Float)
    mean_uptake: Mapped[float] = mapped_column(Float)
    peak_probability: Mapped[float | None] = mapped_column(Float)


class ModelVersion(Base):
    """A model artifact known to the service; at most one is promoted."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    path: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trained: Mapped[bool] = mapped_column(Boolean, default=False)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    """A client credential: only the SHA-256 of the key is stored, never the key."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ArchiveEntry(Base):
    """One archive study (by content hash) submitted for one model version.

    ``(content_hash, model_version)`` is unique: the database refuses a second
    submission of the same content for the same model version.
    """

    __tablename__ = "archive_entries"
    __table_args__ = (
        UniqueConstraint("content_hash", "model_version", name="uq_archive_entries_hash_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # png | nifti | dicom
    root: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)  # relative to root
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    study: Mapped[Study] = relationship()


class PacsStudy(Base):
    """Where a study that came from a PACS (DICOMweb) came from, and its SUV factor.

    ``identity`` is the SHA-256 of the series' identity (its SeriesInstanceUID and its
    sorted SOPInstanceUIDs, ``archive/pacs_source.py``); it is also the study's archive
    entry's content hash. ``suv_factor`` turns the series' values (``units``) into
    body-weight SUV; None when the tags do not allow it, with the reason in ``suv_note``.
    ``quant_mip`` is the unclipped MIP at the rendered PNG's size in the series' units
    (16-bit PNG; value × ``quant_mip_slope``), so lesions get SUVmax and SUVmean
    (``archive/suv.py``).
    """

    __tablename__ = "pacs_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    identity: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uids: Mapped[list[str]] = mapped_column(JSON)
    #: Patient and study attributes (DICOM keywords) the objects sent back repeat.
    patient: Mapped[dict[str, Any]] = mapped_column(JSON)
    units: Mapped[str | None] = mapped_column(String(16))
    suv_factor: Mapped[float | None] = mapped_column(Float)
    suv_note: Mapped[str] = mapped_column(Text)
    quant_mip: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    quant_mip_slope: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PacsExportState(enum.StrEnum):
    """Where an export to a PACS stands."""

    PENDING = "pending"  # to be sent (again) at ``next_attempt_at``
    SENT = "sent"  # every object was stored


class PacsExport(Base):
    """The outbox: one study's results of one model version to send back to its PACS.

    ``objects`` lists the DICOM objects with their (deterministic) UIDs and whether the
    PACS has stored each, so a retry sends only what is missing and never a second copy.
    A row is due while ``pending`` and ``next_attempt_at`` has passed; the pass that
    sends it moves ``next_attempt_at`` ahead first, so a lost task only delays it.
    """

    __tablename__ = "pacs_exports"
    __table_args__ = (
        UniqueConstraint("study_id", "model_version", name="uq_pacs_exports_study_model"),
        Index("ix_pacs_exports_state_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(32))
    state: Mapped[PacsExportState] = mapped_column(
        _enum(PacsExportState, "pacs_export_state"), default=PacsExportState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: [{"kind", "series_instance_uid", "sop_instance_uid", "stored"}], in sending order.
    objects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


#: Metric columns of ``Result``, in the order reports show them.
METRIC_FIELDS: tuple[str, ...] = (
    "tumor_pixels",
    "tumor_fraction",
    "lesions",
    "largest_lesion_px",
    "uptake_mean",
    "uptake_max",
    "dice",
    "precision",
    "recall",
)

#: Biomarker columns of ``Result`` beyond the metrics, in the order tables show them.
BIOMARKER_FIELDS: tuple[str, ...] = (
    "tumor_area_cm2",
    "sdmax_px",
    "sdmax_cm",
    "sdmax_per_height",
    "body_height_px",
    "body_width_px",
    "body_height_cm",
    "body_width_cm",
)

#: Columns of ``Lesion`` as tables show them (after the study and the model version).
LESION_FIELDS: tuple[str, ...] = (
    "number",
    "area_px",
    "area_mm2",
    "centroid_row",
    "centroid_col",
    "bbox_row0",
    "bbox_col0",
    "bbox_row1",
    "bbox_col1",
    "relative_height",
    "peak_uptake",
    "mean_uptake",
    "peak_probability",
)
