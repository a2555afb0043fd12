"""The PACS outbox against a real Orthanc and database: exports are made once per study and
model, sent object by object, and a PACS that is down or stops half-way loses nothing
and gets no second copy.

The study's result is stored as a worker stores it (``db/status.py``, the result and
lesion repositories), from a threshold of its rendered MIP instead of the network; the
end-to-end test (``tests/integration/test_pacs_end_to_end.py``) runs a real worker.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest
import redis
from PIL import Image
from pydicom.dataset import Dataset
from sqlalchemy import select

from archive.dicomweb import DicomwebArchive
from archive.pacs_export import export_one, outbox_pass, queue_exports
from archive.scan import scan_archive
from config.settings import PacsEndpoint, Settings
from core.celery_app import PACS_EXPORT_TASK
from core.dispatch import Dispatcher
from db import status
from db.models import PacsExport, PacsExportState, Study, utcnow
from db.repositories import studies as studies_repo
from db.session import session_scope
from model.biomarkers import mip_biomarkers
from model.lesions import Spacing, body_extent, find_lesions
from model.png import encode_mask_png
from tests.archive.conftest import pet_volume
from tests.archive.orthanc import Orthanc
from tests.archive.pet_series import pet_series, stow

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def segment_like_a_worker(settings: Settings, study_id: int, model_version: str) -> np.ndarray:
    """Claim, measure and store the study as a worker does, the mask being its darkest
    pixels (the hot spot); returns the mask."""
    with session_scope(settings.sqlalchemy_url) as session:
        status.claim(
            session,
            [study_id],
            owner="test:1",
            lease_until=utcnow() + timedelta(minutes=5),
            model_version=model_version,
            model_trained=True,
            max_deliveries=3,
            give_up="-",
            held_elsewhere=lambda study, now: False,
        )
    with session_scope(settings.sqlalchemy_url) as session:
        study = session.get(Study, study_id)
        assert study is not None
        gray = np.asarray(Image.open(io.BytesIO(study.input_png)))
        spacing = Spacing(study.spacing_row_mm or 1.0, study.spacing_col_mm or 1.0)
    image = 1.0 - gray / 255.0
    mask = gray < 10
    mask[:100] = False  # the brain (rows 10 to 80) is not a lesion; the spot is at row 130
    body = body_extent(image)
    lesions = find_lesions(mask, image, None, spacing, body)
    markers = mip_biomarkers(lesions, body, spacing).as_dict()
    finished: list[tuple[str, object]] = []  # the job's end, announced to nobody here
    with session_scope(settings.sqlalchemy_url, finished.extend) as session:
        status.finish(session, {study_id: None})
        studies_repo.upsert_results(
            session,
            [
                {
                    "study_id": study_id,
                    "model_version": model_version,
                    "mask_png": encode_mask_png(mask),
                    "height": mask.shape[0],
                    "width": mask.shape[1],
                    "tumor_pixels": int(mask.sum()),
                    "lesions": len(lesions),
                    "largest_lesion_px": lesions[0].area_px,
                    **{k: markers[k] for k in ("tumor_area_cm2", "sdmax_cm")},
                }
            ],
        )
        rows = []
        for lesion in lesions:
            row = {k: v for k, v in lesion.as_dict().items() if k != "bbox"}
            row["bbox_row0"], row["bbox_col0"], row["bbox_row1"], row["bbox_col1"] = lesion.bbox
            rows.append({"study_id": study_id, "model_version": model_version, **row})
        studies_repo.replace_lesions(session, [(study_id, model_version)], rows)
    return mask


def _scanned_study(settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher) -> tuple[int, str]:
    stow(orthanc.dicomweb_url, pet_series(pet_volume(seed=21)))
    report = scan_archive(settings, dispatcher=dispatcher, source="test-pacs")
    assert report.submitted == 1
    assert report.model_version is not None
    with session_scope(settings.sqlalchemy_url) as session:
        study_id = session.scalars(select(Study.id).where(Study.job_id == report.job_id)).one()
    return study_id, report.model_version


def _export(settings: Settings, study_id: int) -> PacsExport:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalars(select(PacsExport).where(PacsExport.study_id == study_id)).one()


def _sent_tasks(settings: Settings) -> list[tuple[str, list[int]]]:
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        raw = client.lrange(settings.interactive_queue, 0, -1)
    finally:
        client.close()
    out = []
    for message in reversed(raw):
        envelope = json.loads(message)
        body = json.loads(base64.b64decode(envelope["body"]))
        out.append((envelope["headers"]["task"], body[0]))
    return out


def _output_series(orthanc: Orthanc, study_uid: str) -> dict[str, int]:
    """Instances per series of the study that are not PET: what tumorseg sent."""
    found = orthanc.get(f"/dicom-web/studies/{study_uid}/series?includefield=00201209").json()
    counts = {}
    for item in found:
        ds = Dataset.from_json(item)
        if ds.Modality != "PT":
            counts[str(ds.SeriesInstanceUID)] = int(ds.NumberOfSeriesRelatedInstances)
    return counts


def test_a_finished_pacs_study_is_exported_once(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    study_id, version = _scanned_study(pacs_settings, orthanc, dispatcher)
    assert outbox_pass(pacs_settings, dispatcher).added == []  # not segmented yet
    segment_like_a_worker(pacs_settings, study_id, version)
    quiet = pacs_settings.pacs_endpoints[0].model_copy(update={"export": False})
    no_export = pacs_settings.model_copy(update={"pacs_endpoints": [quiet]})
    assert outbox_pass(no_export, dispatcher).added == []  # export is off by default

    first = outbox_pass(pacs_settings, dispatcher)
    assert first.added == first.sent
    [export_id] = first.added
    assert _sent_tasks(pacs_settings) == [(PACS_EXPORT_TASK, [export_id])]
    again = outbox_pass(pacs_settings, dispatcher)
    assert (again.added, again.sent) == ([], [])  # one row per study and model; held
    row = _export(pacs_settings, study_id)
    assert (row.state, row.model_version, row.endpoint) == (
        PacsExportState.PENDING,
        version,
        "test-pacs",
    )
    assert [o["kind"] for o in row.objects] == ["sc", "seg", "sr", "overlay"]

    sent = export_one(pacs_settings, export_id)
    assert (sent.state, sent.stored, sent.error) == ("sent", ["sc", "seg", "sr", "overlay"], None)
    row = _export(pacs_settings, study_id)
    assert row.state is PacsExportState.SENT
    assert row.sent_at is not None
    assert all(o["stored"] for o in row.objects)
    study_uid = row_study_uid(pacs_settings, study_id)
    expected = {o["series_instance_uid"]: 1 for o in row.objects}
    assert _output_series(orthanc, study_uid) == expected

    repeat = export_one(pacs_settings, export_id)  # a redelivered task
    assert (repeat.state, repeat.stored) == ("sent", [])
    assert _output_series(orthanc, study_uid) == expected


def row_study_uid(settings: Settings, study_id: int) -> str:
    from db.repositories import pacs as pacs_repo

    with session_scope(settings.sqlalchemy_url) as session:
        origin = pacs_repo.pacs_study(session, study_id)
        assert origin is not None
        return origin.study_instance_uid


class StopsAfterFirstStore(DicomwebArchive):
    """A real client that takes its PACS down right after the PACS stored one object."""

    def __init__(self, endpoint: PacsEndpoint, orthanc: Orthanc) -> None:
        super().__init__(endpoint)
        self.orthanc = orthanc

    def store(self, datasets: Sequence[Dataset], study_uid: str) -> None:
        super().store(datasets, study_uid)
        self.orthanc.stop()


@ON_POSTGRESQL
def test_a_pacs_down_or_stopped_mid_export_delays_the_results_and_gets_them_once(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher
) -> None:
    study_id, version = _scanned_study(pacs_settings, orthanc, dispatcher)
    study_uid = row_study_uid(pacs_settings, study_id)
    segment_like_a_worker(pacs_settings, study_id, version)
    [export_id] = outbox_pass(pacs_settings, dispatcher).sent

    orthanc.stop()  # down before the export starts
    down = export_one(pacs_settings, export_id)
    assert (down.state, down.stored) == ("pending", [])
    assert down.error is not None
    assert "ConnectionError" in down.error
    row = _export(pacs_settings, study_id)
    assert row.attempts == 1
    assert row.next_attempt_at - utcnow() > timedelta(seconds=50)  # retry_seconds 60
    assert outbox_pass(pacs_settings, dispatcher).sent == []  # not due yet

    orthanc.start()
    url = pacs_settings.sqlalchemy_url
    with session_scope(url, dispatcher.after_commit) as session:  # a pass once the wait is over
        due = queue_exports(session, pacs_settings, now=utcnow() + timedelta(seconds=61))
    assert due.sent == [export_id]
    half = export_one(pacs_settings, export_id, lambda e: StopsAfterFirstStore(e, orthanc))
    assert (half.state, half.stored) == ("pending", ["sc"])  # stopped after the SC
    row = _export(pacs_settings, study_id)
    assert row.attempts == 2
    assert row.next_attempt_at - utcnow() > timedelta(seconds=110)  # the wait doubled
    assert [o["stored"] for o in row.objects] == [True, False, False, False]

    orthanc.start()
    done = export_one(pacs_settings, export_id)
    assert (done.state, done.stored) == ("sent", ["seg", "sr", "overlay"])  # the rest only
    row = _export(pacs_settings, study_id)
    assert row.last_error is None
    assert _output_series(orthanc, study_uid) == {o["series_instance_uid"]: 1 for o in row.objects}
