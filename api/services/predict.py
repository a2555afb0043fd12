"""POST /predict: one study through the same queue and workers, waited for in-request.

The wait holds no thread: the database work runs in short calls on the threadpool, each
ending its transaction, and between them the request waits on the job's finished-job
notice (``core/dispatch.py``), not on a polling loop, so ``/healthz`` and every other
route stay responsive while many ``/predict`` calls wait. (The route's caller comes
committed, ``api/deps.py::get_principal_committed``: the key's ``last_used_at`` write
must not hold its lock while the request waits for a thread, or the key's other
requests would block on it holding theirs.)
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from PIL import Image
from sqlalchemy.orm import Session

from api.services.auth import Principal
from api.services.errors import ServiceError
from api.services.jobs import Upload, submit_job
from api.services.limits import Admission
from config.settings import Settings
from core.dispatch import Dispatcher
from db import status
from db.models import JobSource, StudyStatus
from db.repositories import jobs as jobs_repo
from db.repositories import studies as studies_repo
from db.session import commit

logger = logging.getLogger(__name__)

#: The name of every job that ``POST /predict`` submits.
PREDICT_JOB_NAME = "predict"


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


async def predict_one(
    session: Session,
    settings: Settings,
    dispatcher: Dispatcher,
    admission: Admission,
    principal: Principal,
    payload: str,
) -> Prediction:
    """Submit one study on the interactive queue and wait for its mask.

    Raises:
        ServiceError: 429/503 from admission, 4xx for unusable input, 422 when the worker
            failed the study, 504 (and the study cancelled) when no worker finished it
            within ``predict_timeout``.
    """
    job_id, study_id = await run_in_threadpool(
        _submit, session, settings, dispatcher, admission, principal, payload
    )
    async with dispatcher.notices.watch(job_id) as wait:
        prediction = await run_in_threadpool(_outcome, session, job_id, study_id)
        if prediction is None and await wait(settings.predict_timeout):
            prediction = await run_in_threadpool(_outcome, session, job_id, study_id)
    if prediction is None:  # the deadline passed, or a notice got lost: look once more
        prediction = await run_in_threadpool(_give_up, session, dispatcher, job_id, study_id)
    if prediction is None:
        raise ServiceError(
            504, f"no worker finished the study within {settings.predict_timeout}s (job {job_id})"
        )
    return prediction


def _submit(
    session: Session,
    settings: Settings,
    dispatcher: Dispatcher,
    admission: Admission,
    principal: Principal,
    payload: str,
) -> tuple[int, int]:
    """Admit, store the job and send it (committed): (job id, study id)."""
    admission.admit(principal.key_id, settings.interactive_queue)
    data = decode_b64_png(payload)
    if len(data) > settings.max_upload_bytes:
        raise ServiceError(413, f"img is over the upload limit of {settings.max_upload_bytes} B")
    job = submit_job(
        session,
        settings,
        [Upload("img.png", data)],
        queue=settings.interactive_queue,
        tenant=principal.tenant,
        source=JobSource.PREDICT,
        name=PREDICT_JOB_NAME,
    )
    job_id, study_id = job.id, job.studies[0].id
    commit(session, dispatcher.after_commit)
    return job_id, study_id


def _outcome(session: Session, job_id: int, study_id: int) -> Prediction | None:
    """The prediction once the study succeeded, None while it is unfinished.

    Raises:
        ServiceError: 422 when the study failed or was cancelled.
    """
    session.expire_all()
    try:
        study = studies_repo.get_study(session, study_id)
        state = study.status if study is not None else StudyStatus.FAILED
        if state in (StudyStatus.FAILED, StudyStatus.CANCELLED, StudyStatus.REJECTED):
            raise ServiceError(422, study.error if study and study.error else "study failed")
        result = studies_repo.latest_result(session, study_id, with_bytes=True)
        if state is not StudyStatus.SUCCEEDED or result is None:
            return None
        job = jobs_repo.get_job(session, job_id)
        trained = bool(job.model_trained) if job is not None else False
        return Prediction(mask_png_to_rgb(result.mask_png), result.model_version, trained)
    finally:
        session.rollback()  # hold no transaction (nor connection) while the request waits


def _give_up(
    session: Session, dispatcher: Dispatcher, job_id: int, study_id: int
) -> Prediction | None:
    """The prediction if the study finished after all, else cancel it (committed)."""
    prediction = _outcome(session, job_id, study_id)
    if prediction is None:
        status.cancel_unfinished(session, job_id)
        commit(session, dispatcher.after_commit)
    return prediction
