"""The hostile-input corpus: every case gets a clear 4xx or a per-study result with a reason.

Committed files live in ``tests/data/bad/`` (see ``make_corpus.py``); cases that need big
inputs are generated here. A case accepted by the API is then run through the real
segmentation service (the worker's code, with the model) so that what the worker says
is checked too: never a 500, never a job left queued or running, never a crash.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from config.settings import Settings
from tests.conftest import png_bytes
from worker.predictor_cache import PredictorCache
from worker.segmentation import SegmentationService

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
GOOD = (BAD / "good.png").read_bytes()
GOOD_LABEL = (BAD / "good_label.png").read_bytes()

Send = Callable[[TestClient], Any]


def _file(name: str, data: bytes, field: str = "files") -> tuple[str, tuple[str, bytes, str]]:
    return (field, (name, data, "image/png"))


def _post(*files: tuple[str, tuple[str, bytes, str]]) -> Send:
    return lambda client: client.post("/v1/jobs", files=list(files))


def _one(name: str) -> Send:
    return _post(_file(name, (BAD / name).read_bytes()))


def _raw_filename(filename: bytes) -> Send:
    """A multipart body written by hand, so the file name reaches the server unescaped."""
    boundary = b"tumorsegboundary"
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="files"; filename="'
        + filename
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + GOOD
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}
    return lambda client: client.post("/v1/jobs", content=body, headers=headers)


def _predict(payload: Any) -> Send:
    return lambda client: client.post("/predict", json=payload)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("a.png", GOOD)
    return buf.getvalue()


@dataclass(frozen=True)
class Case:
    """One hostile input and the answer it must get.

    ``status`` is the HTTP status; for an accepted job (202) ``study`` is the final status
    every study must reach ("succeeded" or "failed") and ``words`` must appear in the
    error (failed) or the stored file name (succeeded); for a 4xx, in the detail.
    """

    id: str
    send: Send
    status: int
    words: str = ""
    study: str | None = None


CASES = [
    # not a PNG at all
    Case("zero-bytes", _one("zero_bytes.png"), 422, "empty"),
    Case("wrong-magic", _one("wrong_magic.png"), 422, "not a PNG"),
    Case("text", _one("text.png"), 422, "not a PNG"),
    Case("jpeg-named-png", _one("jpeg_named.png"), 422, "not a PNG"),
    Case("tiff-named-png", _one("tiff_named.png"), 422, "not a PNG"),
    Case("zip-named-png", _one("zip_named.png"), 422, "not a PNG"),
    # broken PNGs
    Case("truncated", _one("truncated.png"), 422, "truncated"),
    Case("no-iend", _one("no_iend.png"), 422, "truncated"),
    # a flipped IDAT checksum over intact data: the worker's decoder would read it, but the
    # upload check walks every chunk's CRC and refuses the file as corrupt
    Case("bad-idat-crc", _one("bad_crc.png"), 422, "bad header checksum in b'IDAT'"),
    Case("header-only", _one("header_only.png"), 422, "corrupt"),
    Case("trailing-garbage", _one("trailing_garbage.png"), 422, "IEND"),
    Case("text-chunk-bomb", _one("text_chunk_bomb.png"), 422, "corrupt"),
    # sizes
    Case("zero-by-zero", _one("zero_by_zero.png"), 422, "cannot read its header"),
    Case("one-by-one", _one("one_by_one.png"), 422, "under the minimum"),
    Case("bomb-65535", _one("bomb_65535.png"), 413, "decompression bomb"),
    Case(
        "over-max-side",
        _post(_file("wide.png", png_bytes(np.zeros((20, 2100), np.uint8)))),
        413,
        "over the limit",
    ),
    Case(
        "over-max-pixels",
        _post(_file("big.png", png_bytes(np.zeros((1300, 1300), np.uint8)))),
        413,
        "over the limit",
    ),
    Case("over-max-upload", _post(_file("fat.png", GOOD + b"\x00" * 400_000)), 413, "upload limit"),
    Case(
        "10000-files",
        _post(*[_file(f"{i}.png", b"x") for i in range(10_000)]),
        400,
        "Too many files",
    ),
    Case(
        "over-max-studies",
        _post(*[_file(f"{i}.png", GOOD) for i in range(6)]),
        413,
        "over the limit of 5",
    ),
    Case("no-files", lambda c: c.post("/v1/jobs", data={"x": "y"}), 400, "no files"),
    Case("animated", _one("animated.png"), 422, "animated"),
    # unusual but valid PNGs: decoded and segmented
    Case("gray16", _one("gray16.png"), 202, "gray16.png", "succeeded"),
    Case("palette", _one("palette.png"), 202, "palette.png", "succeeded"),
    Case("interlaced", _one("interlaced.png"), 202, "interlaced.png", "succeeded"),
    Case("rgba", _one("rgba.png"), 202, "rgba.png", "succeeded"),
    Case("gray-alpha", _one("gray_alpha.png"), 202, "gray_alpha.png", "succeeded"),
    Case("bilevel", _one("bilevel.png"), 202, "bilevel.png", "succeeded"),
    # labels
    Case(
        "label-size-mismatch",
        _post(
            _file("s.png", GOOD), _file("s.png", png_bytes(np.zeros((32, 32), np.uint8)), "labels")
        ),
        202,
        "label",
        "failed",
    ),
    Case(
        "label-not-png",
        _post(_file("s.png", GOOD), _file("s.png", b"GIF89a", "labels")),
        422,
        "label s.png",
    ),
    Case(
        "unmatched-label",
        _post(
            _file("patient_001.png", GOOD),
            _file("patient_002.png", GOOD),
            _file("segmentation_777.png", GOOD_LABEL, "labels"),
        ),
        422,
        "segmentation_777",
    ),
    # file names
    Case(
        "dotdot-filename",
        _post(_file("../../etc/passwd.png", GOOD)),
        202,
        "passwd.png",
        "succeeded",
    ),
    Case(
        "backslash-filename",
        _post(_file("..\\..\\windows\\x.png", GOOD)),
        202,
        "x.png",
        "succeeded",
    ),
    Case("nul-filename", _raw_filename(b"evil\x00.png"), 202, "evil", "succeeded"),
    Case(
        "control-chars-filename",
        _raw_filename(b"a\x1b[31mred\x07.png"),
        202,
        "a[31mred.png",
        "succeeded",
    ),
    Case(
        "unicode-filename", _post(_file("患者_001_é.png", GOOD)), 202, "患者_001_é.png", "succeeded"
    ),
    Case("dotdot-only-filename", _post(_file("..", GOOD)), 202, "file0.png", "succeeded"),
    Case("long-filename", _post(_file("x" * 900 + ".png", GOOD)), 202, "xxxx.png", "succeeded"),
    Case("huge-filename", _post(_file("x" * 5000 + ".png", GOOD)), 400, "multipart"),
    # the competition endpoint
    Case("predict-not-base64", _predict({"img": "%%% not base64 %%%"}), 422, "base64"),
    Case(
        "predict-zip", _predict({"img": base64.b64encode(_zip_bytes()).decode()}), 422, "not a PNG"
    ),
    Case(
        "predict-truncated",
        _predict({"img": base64.b64encode((BAD / "truncated.png").read_bytes()).decode()}),
        422,
        "truncated",
    ),
    Case(
        "predict-over-max-upload",
        _predict({"img": base64.b64encode(b"\x89PNG" + b"0" * 400_000).decode()}),
        413,
        "upload limit",
    ),
    Case("predict-wrong-type", _predict({"img": 12345}), 422, "string"),
    Case("predict-no-body", lambda c: c.post("/predict", content=b"{not json"), 422, "json"),
]

#: The archive helper's scan covers two more cases (JSON paths outside the allowed roots,
#: symlinks out of the roots); they are listed in docs/RELIABILITY.md and tested there.


@pytest.fixture(scope="module")
def service(api_settings: Settings) -> SegmentationService:
    """The worker's chunk logic with the API's limits, run in this process; without the
    input check: the corpus is the decoder's cases (64-px gradients, a bilevel image), not
    MIPs, and the check's own cases are tests/model/test_quality.py's."""
    unchecked = api_settings.model_copy(update={"input_check": False})
    return SegmentationService(unchecked, PredictorCache(device="cpu", batch_size=4, members=1))


def test_the_corpus_has_at_least_30_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    committed = {p.name for p in BAD.glob("*.png")}
    assert len(committed) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gets_a_clear_answer(
    client: TestClient, service: SegmentationService, case: Case
) -> None:
    response = case.send(client)
    assert response.status_code == case.status, response.text[:500]
    body = response.json()
    if case.status != 202:
        detail = body["detail"] if isinstance(body["detail"], str) else str(body["detail"])
        assert case.words.lower() in detail.lower(), detail
        return
    queued = [s["id"] for s in body["studies"] if s["status"] == "queued"]
    if queued:
        service.run_chunk(queued)  # what the worker does with the job's task
    job = client.get(f"/v1/jobs/{body['id']}").json()
    assert job["status"] in {"succeeded", "failed", "partially_failed"}, job["counts"]
    for study in job["studies"]:
        assert study["status"] == case.study, study
        if case.study == "failed":
            assert study["error"], study
            assert case.words in study["error"], study
        else:
            assert case.words in study["filename"]
            assert "/" not in study["filename"]
            assert "\x00" not in study["filename"]
            assert len(study["filename"]) <= 200
            mask = client.get(study["mask_url"])
            assert mask.status_code == 200
            assert mask.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("path", "params", "name", "limits"),
    [
        ("/v1/reports/nightly", {"date": "0001-01-01"}, "date", ("1970-01-01", "9999-12-30")),
        ("/v1/reports/nightly", {"date": "9999-12-31"}, "date", ("1970-01-01", "9999-12-30")),
        ("/v1/jobs", {"limit": "0"}, "limit", ("1", "200")),
        ("/v1/jobs", {"limit": "201"}, "limit", ("1", "200")),
        ("/v1/jobs", {"offset": "-1"}, "offset", ("0", "2147483647")),
        ("/v1/jobs/0", {}, "job_id", ("1", "2147483647")),
        ("/v1/studies/99999999999", {}, "study_id", ("1", "2147483647")),
    ],
)
def test_values_out_of_range_get_a_422_that_names_the_range(
    client: TestClient, path: str, params: dict[str, str], name: str, limits: tuple[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == name
    assert error["msg"] == f"Input should be from {limits[0]} to {limits[1]}"


def test_report_dates_at_the_ends_of_the_range_are_answered(client: TestClient) -> None:
    for day in ("1970-01-01", "9999-12-30"):
        response = client.get("/v1/reports/nightly", params={"date": day})
        assert response.status_code == 200, response.text
        assert response.json()["studies"] == []
