"""A PET series in a real Orthanc, scanned, segmented by a real worker and sent back as
SC, SEG and SR into its own study, read back over WADO-RS and parsed with highdicom;
a second scan sends nothing and makes no second copy."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from sqlalchemy import select

from api.app import create_app
from archive.pacs_export import outbox_pass
from archive.scan import scan_archive
from archive.suv import decode_quant_mip, lesion_suv
from config.settings import Settings
from core.celery_app import PACS_OUTBOX_TASK
from core.dispatch import Dispatcher
from db.models import PacsExport, PacsExportState, Study
from db.repositories import pacs as pacs_repo
from db.session import session_scope
from model.manifest import read_manifest, released_artifact_dir
from tests.archive.conftest import SPOT_VALUE, pet_volume
from tests.archive.orthanc import Orthanc
from tests.archive.pet_series import SUV_FACTOR, pet_series, stow
from tests.conftest import WorkerProcess, bearer, create_api_key, running_worker
from tests.integration.conftest import wait_for_job

pytestmark = [
    pytest.mark.integration,
    # one backend: the scan and outbox tests run the database's part on both
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


@pytest.fixture
def pacs_worker(pacs_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker on the PACS settings' queues that knows the PACS."""
    with running_worker(pacs_settings, tmp_path / "worker.log") as process:
        yield process


def _wait(condition: Callable[[], bool], what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 180
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within 180s:\n{worker.log.read_text()[-4000:]}")
        time.sleep(0.3)


def _exports(settings: Settings, study_id: int) -> list[PacsExport]:
    with session_scope(settings.sqlalchemy_url) as session:
        stmt = select(PacsExport).where(PacsExport.study_id == study_id)
        return list(session.scalars(stmt))


def _study_series(client: DICOMwebClient, study_uid: str) -> dict[str, tuple[str, int]]:
    found = client.search_for_series(study_uid, fields=["NumberOfSeriesRelatedInstances"])
    series = [Dataset.from_json(item) for item in found]
    return {
        str(s.SeriesInstanceUID): (str(s.Modality), int(s.NumberOfSeriesRelatedInstances))
        for s in series
    }


def test_a_pet_series_comes_back_as_sc_seg_and_sr_once(
    pacs_settings: Settings, orthanc: Orthanc, dispatcher: Dispatcher, pacs_worker: WorkerProcess
) -> None:
    series = pet_series(pet_volume(seed=31))
    study_uid = series[0].StudyInstanceUID
    stow(orthanc.dicomweb_url, series)

    report = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert report.job_id is not None
    assert report.submitted == 1  # one job with one study
    key = create_api_key(pacs_settings.sqlalchemy_url, "pacs-e2e")
    with TestClient(create_app(pacs_settings), headers=bearer(key)) as api:
        job = wait_for_job(api, report.job_id, pacs_worker)
        [study] = job["studies"]
        assert study["status"] == "succeeded", study["error"]
        study_id = study["id"]

        # what beat sends: the worker's outbox pass, then its export task
        assert dispatcher.send_by_name(PACS_OUTBOX_TASK, [], pacs_settings.interactive_queue)
        _wait(
            lambda: [e.state for e in _exports(pacs_settings, study_id)] == [PacsExportState.SENT],
            "the results were not sent back",
            pacs_worker,
        )
        shown = api.get(f"/v1/studies/{study_id}").json()

    # GET /v1/studies/{id}: where it came from and what went back
    origin = shown["pacs"]
    assert origin["endpoint"] == "test-pacs"
    assert origin["study_instance_uid"] == study_uid
    assert origin["series_instance_uid"] == series[0].SeriesInstanceUID
    assert origin["instances"] == 120
    assert origin["suv_factor"] == pytest.approx(SUV_FACTOR, rel=1e-4)
    [export] = origin["exports"]
    assert export["state"] == "sent"
    assert [o["kind"] for o in export["objects"]] == ["sc", "seg", "sr", "overlay"]
    assert all(o["stored"] for o in export["objects"])
    uids = {o["kind"]: o for o in export["objects"]}

    # read back over WADO-RS, in the source study
    client = DICOMwebClient(orthanc.dicomweb_url, session=requests.Session())
    in_study = _study_series(client, study_uid)
    assert in_study == {
        series[0].SeriesInstanceUID: ("PT", 120),
        uids["sc"]["series_instance_uid"]: ("OT", 1),
        uids["seg"]["series_instance_uid"]: ("SEG", 1),
        uids["sr"]["series_instance_uid"]: ("SR", 1),
        uids["overlay"]["series_instance_uid"]: ("OT", 1),
    }

    def read(kind: str) -> Dataset:
        item = uids[kind]
        return client.retrieve_instance(
            study_uid, item["series_instance_uid"], item["sop_instance_uid"]
        )

    sc, seg_ds, sr_ds = read("sc"), read("seg"), read("sr")
    with session_scope(pacs_settings.sqlalchemy_url) as session:
        stored = session.get(Study, study_id)
        assert stored is not None
        mip = np.asarray(Image.open(io.BytesIO(stored.input_png)))
        result = pacs_repo.result_of(session, study_id, job["model_version"])
        assert result is not None
        mask = np.asarray(Image.open(io.BytesIO(result.mask_png))) > 127
        pacs = pacs_repo.pacs_study(session, study_id, with_mip=True)
        assert pacs is not None
        assert pacs.quant_mip is not None
        assert pacs.quant_mip_slope is not None
        values = decode_quant_mip(pacs.quant_mip, pacs.quant_mip_slope)
        lesion_count, factor = result.lesions, pacs.suv_factor
    assert factor is not None
    released = read_manifest(released_artifact_dir())
    assert released.version == job["model_version"]
    for ds in (sc, seg_ds, sr_ds):  # the model version and the artifact's SHA-256
        ours = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "tumorseg"]
        assert (ours[-1].ManufacturerModelName, ours[-1].DeviceSerialNumber) == (
            released.version,
            released.weights_sha256,
        )
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert len(sc.SourceImageSequence) == 120
    assert np.array_equal(sc.pixel_array, mip)  # the MIP the model saw

    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.get_segment_description(1).segmented_property_type.value == "108369006"
    pixels = seg.get_pixels_by_source_instance([sc.SOPInstanceUID], segment_numbers=[1])
    assert np.array_equal(pixels[0, :, :, 0] > 0, mask)  # the SEG is the stored mask
    algorithm = seg_ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == job["model_version"]

    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    [group] = sr.content.get_image_measurement_groups()
    measured = {m.name.value: m.value for m in group.get_measurements()}
    assert measured["246206008"] == lesion_count  # number of lesions
    lesion_rows = sr.content.get_planar_roi_measurement_groups()
    assert len(lesion_rows) == lesion_count
    assert lesion_count >= 1  # the hot spot at least
    # SUVmax: the quantitative MIP under the stored mask, times the factor: the spot's
    expected = max(le.suv_max for le in lesion_suv(mask, values, factor))
    assert measured["126401"] == pytest.approx(expected, rel=1e-6)
    assert measured["126401"] == pytest.approx(SPOT_VALUE, rel=0.02)

    # a second scan finds nothing new and sends nothing again
    again = scan_archive(pacs_settings, dispatcher=dispatcher, source="test-pacs")
    assert (again.job_id, again.submitted, again.already_done) == (None, 0, 1)
    assert outbox_pass(pacs_settings, dispatcher).added == []
    assert len(_exports(pacs_settings, study_id)) == 1
    assert _study_series(client, study_uid) == in_study
