"""POST /predict: one study through the same queue and workers, waited for in-request."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
from dataclasses import dataclass

from PIL import Image
from sqlalchemy.orm import Session

from api.services.errors import ServiceError
from api.services.jobs import Upload, submit_job
from api.services.queue import QueueProducer, commit_and_dispatch
from config.settings import Settings
from db.models import DEFAULT_TENANT, JobSource, StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Prediction:
    """The competition-format mask and which model made it."""

    rgb_png: bytes
    model_version: str
    model_trained: bool


def mask_png_to_rgb(mask_png: bytes) -> bytes:
    """Turn a stored L-mode 0/255 mask into the competition's RGB PNG (equal channels)."""
    with Image.open(io.BytesIO(mask_png)) as img:
        rgb = img.convert("L").convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_b64_png(payload: str) -> bytes:
    """Decode the request's base64 (a ``data:`` URL prefix is tolerated)."""
    if "," in payload[:100] and payload.startswith("data:"):
        payload = payload.split(",", 1)[1]
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(422, f"img is not valid base64: {exc}") from exc


def predict_one(
    session: Session,
    settings: Settings,
    producer: QueueProducer,
    payload: str,
    tenant: str = DEFAULT_TENANT,
) -> Prediction:
    """Submit one study on the interactive queue and wait for its mask.

    Raises:
        ServiceError: 4xx for unusable input, 422 when the worker failed the study,
            504 when no worker finished it within ``predict_timeout``.
    """
    data = decode_b64_png(payload)
    if len(data) > settings.max_upload_bytes:
        raise ServiceError(413, f"img is over the upload limit of {settings.max_upload_bytes} B")
    job = submit_job(
        session,
        settings,
        producer,
        [Upload("img.png", data)],
        queue=settings.interactive_queue,
        tenant=tenant,
        source=JobSource.PREDICT,
    )
    job_id, study_id = job.id, job.studies[0].id
    commit_and_dispatch(session)

    deadline = time.monotonic() + settings.predict_timeout
    while True:
        session.expire_all()
        study = studies_repo.get_study(session, study_id)
        status = study.status if study is not None else StudyStatus.FAILED
        if status is StudyStatus.SUCCEEDED:
            result = studies_repo.latest_result(session, study_id, with_bytes=True)
            job = jobs_repo.get_job(session, job_id)  # type: ignore[assignment]
            if result is not None:
                trained = bool(job.model_trained) if job is not None else False
                return Prediction(mask_png_to_rgb(result.mask_png), result.model_version, trained)
        if status in (StudyStatus.FAILED, StudyStatus.CANCELLED):
            raise ServiceError(422, study.error if study and study.error else "study failed")
        session.rollback()  # end the read transaction between polls
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)

    jobs_repo.cancel_job(session, job_id)
    commit_and_dispatch(session)
    raise ServiceError(
        504, f"no worker finished the study within {settings.predict_timeout}s (job {job_id})"
    )
