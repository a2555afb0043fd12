"""POST/GET/DELETE /v1/jobs: intake, validation, labels, listing, cancellation."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from config.settings import Settings
from tests.conftest import SAMPLE_IMGS, patient_files, png_bytes


def _files(
    *items: tuple[str, bytes], field: str = "files"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (name, data, "image/png")) for name, data in items]


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()


def test_submit_answers_202_with_location_and_queues_the_chunks(
    client: TestClient, api_settings: Settings
) -> None:
    queue_len_before = redis.Redis.from_url(api_settings.redis_url or "").llen(
        api_settings.interactive_queue
    )
    response = client.post("/v1/jobs", files=_files(*[(f"s{i}.png", SAMPLE) for i in range(5)]))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["total"] == 5
    assert job["progress"] == 0.0
    assert job["counts"]["queued"] == 5
    assert [s["filename"] for s in job["studies"]] == [f"s{i}.png" for i in range(5)]
    # chunks of chunk_size=4 → two tasks, sent after the commit, carrying ids only
    queued = redis.Redis.from_url(api_settings.redis_url or "").llen(api_settings.interactive_queue)
    assert queued - queue_len_before == 2
    assert client.get(f"/v1/jobs/{job['id']}").json()["counts"]["queued"] == 5


def test_status_alone_leaves_the_studies_out(client: TestClient) -> None:
    job = client.post("/v1/jobs", files=_files(*[(f"s{i}.png", SAMPLE) for i in range(3)])).json()
    status = client.get(f"/v1/jobs/{job['id']}", params={"studies": "false"}).json()
    assert status["studies"] is None
    assert status["total"] == 3
    assert status["counts"]["queued"] == 3
    assert "aggregates" in status
    assert len(client.get(f"/v1/jobs/{job['id']}").json()["studies"]) == 3
    bad = client.get(f"/v1/jobs/{job['id']}", params={"studies": "maybe"})
    assert bad.status_code == 422


def test_labels_are_matched_by_patient_number(client: TestClient) -> None:
    (img, label), (img2, _label2) = patient_files(2)
    response = client.post(
        "/v1/jobs",
        files=_files((img.name, img.read_bytes()), (img2.name, img2.read_bytes()))
        + _files((label.name, label.read_bytes()), field="labels"),
    )
    assert response.status_code == 202, response.text
    studies = response.json()["studies"]
    assert studies[0]["label_filename"] == label.name
    assert studies[1]["label_filename"] is None


def test_unmatched_label_is_refused(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs",
        files=_files(("patient_000.png", SAMPLE), ("patient_001.png", SAMPLE))
        + _files(("segmentation_777.png", SAMPLE), field="labels"),
    )
    assert response.status_code == 422
    assert "segmentation_777.png" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"GIF89a not a png at all", 422, "not a PNG"),
        (SAMPLE[: len(SAMPLE) // 2], 422, "truncated"),
        (b"", 422, "empty"),
        (_png_with_header(0, 0), 422, "x.png"),
        (_png_with_header(40_000, 40_000), 413, "decompression bomb"),
        (_png_with_header(3000, 100), 413, "over the limit"),
        (png_bytes(np.zeros((8, 8), np.uint8)), 422, "under the minimum"),
    ],
    ids=["non-image", "truncated", "empty", "zero-size", "bomb", "too-wide", "tiny"],
)
def test_single_bad_study_gets_a_4xx_naming_the_problem(
    client: TestClient, data: bytes, status: int, words: str
) -> None:
    response = client.post("/v1/jobs", files=_files(("x.png", data)))
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert words in detail
    assert "x.png" in detail


def test_request_level_limits(client: TestClient, api_settings: Settings) -> None:
    no_files = client.post("/v1/jobs", data={"note": "nothing"})
    assert no_files.status_code == 400
    assert "no files" in no_files.json()["detail"]
    too_many = client.post("/v1/jobs", files=_files(*[(f"{i}.png", SAMPLE) for i in range(6)]))
    assert too_many.status_code == 413
    assert "over the limit of 5" in too_many.json()["detail"]
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * api_settings.max_upload_bytes
    too_big = client.post("/v1/jobs", files=_files(("big.png", big)))
    assert too_big.status_code == 413
    assert "big.png" in too_big.json()["detail"]


def test_bad_study_in_a_batch_is_failed_at_intake_and_the_rest_queue(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", files=_files(("good.png", SAMPLE), ("broken.png", SAMPLE[:3000]))
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["counts"]["queued"] == 1
    assert job["counts"]["failed"] == 1
    broken = job["studies"][1]
    assert broken["status"] == "failed"
    assert "broken.png" in broken["error"]
    assert client.get(f"/v1/studies/{broken['id']}/mask.png").status_code == 409


def test_list_jobs_pages_newest_first(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", files=_files(("a.png", SAMPLE))).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 0}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    assert page["total"] >= 3
    assert page["limit"] == 2
    second = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert second["items"][0]["id"] == ids[0]
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_delete_cancels_queued_studies(client: TestClient) -> None:
    job = client.post("/v1/jobs", files=_files(("a.png", SAMPLE), ("b.png", SAMPLE))).json()
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["cancelled"] == 2
    assert cancelled["progress"] == 1.0
    assert cancelled["timings"]["finished_at"] is not None
    study_id = cancelled["studies"][0]["id"]
    study = client.get(f"/v1/studies/{study_id}").json()
    assert study["status"] == "cancelled"
    assert study["mask_url"] is None


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/v1/jobs/999999").status_code == 404
    assert client.delete("/v1/jobs/999999").status_code == 404
    assert client.get("/v1/studies/999999").status_code == 404
    assert client.get("/v1/studies/999999/mask.png").status_code == 404


def test_openapi_documents_the_versioned_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/studies/{study_id}/mask.png", "/predict"} <= set(
        paths
    )
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("given", "stored"), [("4", [4.0, 4.0]), ("2.5,4", [2.5, 4.0]), (" 3 x 2 ", [3.0, 2.0])]
)
def test_pixel_spacing_is_stored_with_every_study(
    client: TestClient, given: str, stored: list[float]
) -> None:
    files = _files(("patient_a.png", SAMPLE), ("patient_b.png", SAMPLE))
    response = client.post("/v1/jobs", files=files, data={"spacing_mm": given})
    assert response.status_code == 202, response.text
    assert [s["spacing_mm"] for s in response.json()["studies"]] == [stored, stored]


@pytest.mark.parametrize("given", ["0", "-2", "nan", "inf", "60", "1,2,3", "four", "2;2"])
def test_bad_pixel_spacing_is_refused_with_the_expected_form(
    client: TestClient, given: str
) -> None:
    response = client.post(
        "/v1/jobs", files=_files(("patient.png", SAMPLE)), data={"spacing_mm": given}
    )
    assert response.status_code == 422
    assert "spacing_mm" in response.json()["detail"]
    assert "ROWS,COLUMNS" in response.json()["detail"]


def test_tables_of_a_queued_job_list_its_studies_without_results(client: TestClient) -> None:
    import io

    import pandas as pd

    from api.services.exports import LESION_COLUMNS, RESULT_COLUMNS

    response = client.post("/v1/jobs", files=_files(("a.png", SAMPLE), ("b.png", SAMPLE)))
    job_id = response.json()["id"]
    table = client.get(f"/v1/jobs/{job_id}/results.csv")
    assert table.status_code == 200
    assert table.headers["content-type"].startswith("text/csv")
    assert f"job-{job_id}-results.csv" in table.headers["content-disposition"]
    results = pd.read_csv(io.StringIO(table.text))
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert results["filename"].tolist() == ["a.png", "b.png"]
    assert results["status"].tolist() == ["queued", "queued"]
    assert results["model_version"].isna().all()
    lesions = pd.read_csv(io.StringIO(client.get(f"/v1/jobs/{job_id}/lesions.csv").text))
    assert list(lesions.columns) == list(LESION_COLUMNS)
    assert lesions.empty
    assert client.get("/v1/jobs/999999/results.csv").status_code == 404


def test_submitting_runs_a_fixed_number_of_statements_whatever_the_job_s_size(
    api_settings: Settings,
) -> None:
    from sqlalchemy import event

    from api.app import create_app
    from db.session import get_engine
    from tests.conftest import bearer, create_api_key

    settings = api_settings.model_copy(update={"max_studies_per_job": 32})
    key = create_api_key(settings.sqlalchemy_url, "statements")
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement.split(None, 1)[0].upper())

    with TestClient(create_app(settings), headers=bearer(key)) as client:
        assert client.get("/v1/jobs").status_code == 200  # the key's first use is recorded
        engine = get_engine(settings.sqlalchemy_url)
        per_size = {}
        for n in (2, 32):
            seen.clear()
            event.listen(engine, "before_cursor_execute", count)
            try:
                files = _files(*[(f"s{i}.png", SAMPLE) for i in range(n)])
                response = client.post("/v1/jobs", files=files)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert response.status_code == 202, response.text
            assert len(response.json()["studies"]) == n
            per_size[n] = list(seen)
    assert per_size[2] == per_size[32], "no statement per study"
    assert per_size[32] == ["SELECT", "INSERT", "INSERT"]  # the key, the job, its studies


def test_a_job_keeps_its_name_and_lists_show_it(client: TestClient) -> None:
    named = client.post(
        "/v1/jobs", files=_files(("a.png", SAMPLE)), data={"name": "  ward 3,\tMarch \x00 "}
    )
    assert named.status_code == 202, named.text
    job = named.json()
    assert job["name"] == "ward 3,March"  # control characters and outer blanks dropped
    assert client.get(f"/v1/jobs/{job['id']}").json()["name"] == "ward 3,March"
    unnamed = client.post("/v1/jobs", files=_files(("b.png", SAMPLE))).json()
    assert unnamed["name"] is None
    listed = {j["id"]: j["name"] for j in client.get("/v1/jobs").json()["items"]}
    assert listed[job["id"]] == "ward 3,March"
    assert listed[unnamed["id"]] is None


def test_a_name_over_the_limit_is_refused_naming_it(client: TestClient) -> None:
    response = client.post("/v1/jobs", files=_files(("a.png", SAMPLE)), data={"name": "x" * 121})
    assert response.status_code == 422
    assert "120" in response.text


def test_the_links_of_a_new_job_lead_to_its_routes(client: TestClient) -> None:
    """The OpenAPI links of POST /v1/jobs's answer name operations that exist, and their
    parameters, read from a real answer, reach the job and its first study."""
    spec = client.get("/openapi.json").json()
    links = spec["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]
    job = client.post("/v1/jobs", files=_files(("a.png", SAMPLE), ("b.png", SAMPLE))).json()
    reached = {}
    for name, link in links.items():
        pointer = link["operationRef"].removeprefix("#/paths/")
        path, method = pointer.rsplit("/", 1)
        path = path.replace("~1", "/").replace("~0", "~")
        assert method in spec["paths"][path], name
        ((parameter, expression),) = link["parameters"].items()
        value: Any = job
        for step in expression.removeprefix("$response.body#/").split("/"):
            value = value[int(step)] if isinstance(value, list) else value[step]
        response = client.request(method, path.replace(f"{{{parameter}}}", str(value)))
        reached[name] = response.status_code
    assert reached.pop("GetFirstStudyComparison") == 409  # no label
    for image in ("GetFirstStudyMask", "GetFirstStudyOverlay"):
        assert reached.pop(image) == 409  # queued: no mask yet
    assert set(reached.values()) == {200}, reached
    assert {"GetJob", "CancelJob", "GetFirstStudy", "GetResultsCsv"} <= set(reached)


def test_a_job_s_chunks_hold_studies_of_similar_height(
    client: TestClient, api_settings: Settings
) -> None:
    import base64
    import io
    import json

    from PIL import Image

    def resized(height: int) -> bytes:
        out = io.BytesIO()
        Image.open(io.BytesIO(SAMPLE)).resize((200, height)).save(out, format="PNG")
        return out.getvalue()

    broker = redis.Redis.from_url(api_settings.redis_url or "")
    queue = api_settings.interactive_queue
    before = broker.llen(queue)
    heights = [400, 250, 400, 250, 250]  # chunk_size 4, at most 5 studies a job
    files = _files(*[(f"s{i}.png", resized(h)) for i, h in enumerate(heights)])
    job = client.post("/v1/jobs", files=files).json()
    by_id = {s["id"]: heights[s["position"]] for s in job["studies"]}
    sent = broker.lrange(queue, 0, broker.llen(queue) - before - 1)  # LPUSH: newest first
    chunks = [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in reversed(sent)]
    assert [[by_id[i] for i in chunk] for chunk in chunks] == [[250, 250, 250, 400], [400]]
