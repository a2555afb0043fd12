"""The web viewer over HTTP: sign-in, cookie flags, CSRF tokens and tenant isolation;
the study page's lesions, biomarkers and comparison with the label; the job's tables."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.services.overlay import FALSE_POSITIVE_RGB, HIT_RGB, MISS_RGB
from config.settings import Settings
from db import status
from db.repositories import api_keys as keys_repo
from db.session import session_scope
from tests.api.stored_results import HEIGHT, WIDTH, masks, png, succeed, unannounced
from tests.conftest import SAMPLE_IMGS, bearer, create_api_key

SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()
PROTECTED_PAGES = [
    "/ui",
    "/ui/jobs/1",
    "/ui/jobs/1/results.csv",
    "/ui/studies/1",
    "/ui/studies/1/input.png",
    "/ui/studies/1/comparison.png",
    "/ui/api/jobs",
]


@pytest.fixture(scope="module")
def browser(api_settings: Settings) -> Iterator[TestClient]:
    """The app over https (the cookies are Secure), without any Authorization header."""
    with TestClient(create_app(api_settings), base_url="https://testserver") as client:
        yield client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "page has no form token"
    return match.group(1)


def _sign_in(client: TestClient, key: str) -> TestClient:
    client.cookies.clear()
    form = client.get("/ui/login")
    response = client.post(
        "/ui/login", data={"key": key, "csrf": _csrf(form.text)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client


def _submit(client: TestClient, key: str) -> dict[str, int]:
    files = [("files", ("a.png", SAMPLE, "image/png"))]
    job = client.post("/v1/jobs", files=files, headers=bearer(key)).json()
    return {"job": job["id"], "study": job["studies"][0]["id"]}


@pytest.mark.parametrize("path", PROTECTED_PAGES)
def test_pages_redirect_to_login_without_a_session(browser: TestClient, path: str) -> None:
    browser.cookies.clear()
    response = browser.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")
    assert path in response.headers["location"].replace("%2F", "/")
    assert b"tumor" not in response.content


def test_a_tampered_or_foreign_cookie_is_not_a_session(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-tamper")
    token = _sign_in(browser, key).cookies["tumorseg_session"]
    key_id, expires, nonce, signature = token.split(".")
    for forged in (
        f"{int(key_id) + 1}.{expires}.{nonce}.{signature}",  # another key, same signature
        f"{key_id}.{int(expires) + 10**6}.{nonce}.{signature}",  # longer life
        "garbage",
    ):
        browser.cookies.clear()
        browser.cookies.set("tumorseg_session", forged, domain="testserver", path="/ui")
        assert browser.get("/ui", follow_redirects=False).status_code == 303


def test_a_wrong_key_is_rejected_and_sets_no_session(browser: TestClient) -> None:
    browser.cookies.clear()
    form = browser.get("/ui/login")
    response = browser.post(
        "/ui/login",
        data={"key": "tsk_not-a-real-key", "csrf": _csrf(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "Invalid or revoked API key" in response.text
    assert "tumorseg_session" not in response.headers.get("set-cookie", "")
    assert browser.get("/ui", follow_redirects=False).status_code == 303


def test_login_without_the_form_token_is_refused(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-csrf")
    browser.cookies.clear()
    browser.get("/ui/login")
    response = browser.post("/ui/login", data={"key": key, "csrf": "x"}, follow_redirects=False)
    assert response.status_code == 400
    assert "tumorseg_session" not in response.headers.get("set-cookie", "")


def test_session_cookie_is_httponly_secure_samesite_strict_and_holds_no_key(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-cookie")
    browser.cookies.clear()
    form = browser.get("/ui/login?next=/ui/jobs/1")
    response = browser.post(
        "/ui/login",
        data={"key": key, "csrf": _csrf(form.text), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"  # no open redirect
    cookie = next(c for c in response.headers.get_list("set-cookie") if "tumorseg_session=" in c)
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert {"httponly", "secure"} <= set(flags)
    assert flags["samesite"].strip().lower() == "samesite=strict"
    assert flags["path"].strip() == "Path=/ui"
    value = cookie.split(";")[0].split("=", 1)[1]
    assert key not in value
    assert key[4:20] not in value
    page = browser.get("/ui")
    assert page.status_code == 200
    assert 'id="upload-form"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_revoking_the_key_ends_its_web_session(browser: TestClient, api_settings: Settings) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-revoke")
    _sign_in(browser, key)
    assert browser.get("/ui").status_code == 200
    with session_scope(api_settings.sqlalchemy_url) as session:
        row = keys_repo.active_keys_with_prefix(session, key[:12])[0]
        keys_repo.revoke(session, row.id)
    assert browser.get("/ui", follow_redirects=False).status_code == 303


def test_another_tenants_job_is_404_and_not_listed(
    browser: TestClient, api_settings: Settings
) -> None:
    theirs = _submit(browser, create_api_key(api_settings.sqlalchemy_url, "ui-b", tenant="b"))
    _sign_in(browser, create_api_key(api_settings.sqlalchemy_url, "ui-a", tenant="a"))
    for path in (
        f"/ui/jobs/{theirs['job']}",
        f"/ui/api/jobs/{theirs['job']}",
        f"/ui/studies/{theirs['study']}",
        f"/ui/studies/{theirs['study']}/input.png",
        f"/ui/studies/{theirs['study']}/mask.png",
    ):
        assert browser.get(path).status_code == 404, path
    listed = browser.get("/ui/api/jobs").json()
    assert theirs["job"] not in [job["id"] for job in listed["items"]]
    admin = create_api_key(api_settings.sqlalchemy_url, "ui-admin", tenant="a", admin=True)
    _sign_in(browser, admin)
    assert browser.get(f"/ui/jobs/{theirs['job']}").status_code == 200


def test_upload_form_creates_a_job_through_the_job_service(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-upload", tenant="up")
    _sign_in(browser, key)
    csrf = _csrf(browser.get("/ui").text)
    files = [("files", (f"p{i}.png", SAMPLE, "image/png")) for i in range(2)]
    refused = browser.post("/ui/jobs", data={"csrf": "wrong"}, files=files, follow_redirects=False)
    assert refused.status_code == 400
    response = browser.post("/ui/jobs", data={"csrf": csrf}, files=files, follow_redirects=False)
    assert response.status_code == 303
    job_id = int(response.headers["location"].rsplit("/", 1)[1])
    job = browser.get("/v1/jobs/" + str(job_id), headers=bearer(key)).json()
    assert [s["filename"] for s in job["studies"]] == ["p0.png", "p1.png"]
    assert job["status"] == "queued"  # stored and queued like POST /v1/jobs
    page = browser.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    assert "p1.png" in page.text
    image = browser.get(f"/ui/studies/{job['studies'][0]['id']}/input.png")
    assert image.content == SAMPLE
    assert image.headers["content-type"] == "image/png"
    bad = browser.post(
        "/ui/jobs",
        data={"csrf": csrf},
        files=[("files", ("x.png", b"not a png", "image/png"))],
        follow_redirects=False,
    )
    assert bad.status_code in (400, 415, 422)
    assert 'class="error"' in bad.text


@pytest.fixture(scope="module")
def finished(browser: TestClient, api_settings: Settings) -> dict[str, Any]:
    """A job of a labelled and an unlabelled study, both succeeded, and its key."""
    key = create_api_key(api_settings.sqlalchemy_url, "ui-viewer", tenant="viewer")
    mask, label = masks()
    files = [
        ("files", ("p1.png", SAMPLE, "image/png")),
        ("files", ("p2.png", SAMPLE, "image/png")),
        ("labels", ("p1.png", png(label), "image/png")),
    ]
    job = browser.post("/v1/jobs", files=files, headers=bearer(key)).json()
    labelled, unlabelled = (s["id"] for s in job["studies"])
    for study_id in (labelled, unlabelled):
        succeed(api_settings.sqlalchemy_url, study_id, mask)
    return {"key": key, "job": job["id"], "labelled": labelled, "unlabelled": unlabelled}


def test_comparison_png_colours_hits_false_positives_and_misses(
    browser: TestClient, finished: dict[str, Any]
) -> None:
    base = np.asarray(Image.open(io.BytesIO(SAMPLE)).convert("RGB"), np.float64)
    _sign_in(browser, finished["key"])
    for url, headers in (
        (f"/v1/studies/{finished['labelled']}/comparison.png", bearer(finished["key"])),
        (f"/ui/studies/{finished['labelled']}/comparison.png", {}),
    ):
        response = browser.get(url, headers=headers)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == "image/png"
        out = np.asarray(Image.open(io.BytesIO(response.content)))
        assert out.shape == (HEIGHT, WIDTH, 3)
        for (row, col), colour in (
            ((105, 105), FALSE_POSITIVE_RGB),
            ((303, 201), FALSE_POSITIVE_RGB),
            ((105, 115), HIT_RGB),
            ((105, 125), MISS_RGB),
        ):
            want = base[row, col] * 0.4 + np.asarray(colour) * 0.6
            np.testing.assert_allclose(out[row, col], want, atol=1, err_msg=f"{url} {row, col}")
        np.testing.assert_array_equal(out[0:90], base[0:90].astype(np.uint8))  # no tumor


def test_comparison_png_is_refused_without_a_label_or_a_mask(
    browser: TestClient, finished: dict[str, Any], api_settings: Settings
) -> None:
    key = finished["key"]
    response = browser.get(
        f"/v1/studies/{finished['unlabelled']}/comparison.png", headers=bearer(key)
    )
    assert response.status_code == 409
    assert "has no label" in response.text
    _sign_in(browser, key)
    assert browser.get(f"/ui/studies/{finished['unlabelled']}/comparison.png").status_code == 409
    queued = _submit(browser, key)["study"]
    response = browser.get(f"/v1/studies/{queued}/comparison.png", headers=bearer(key))
    assert response.status_code == 409
    assert "no comparison yet" in response.text
    other = create_api_key(api_settings.sqlalchemy_url, "ui-viewer-other", tenant="elsewhere")
    response = browser.get(
        f"/v1/studies/{finished['labelled']}/comparison.png", headers=bearer(other)
    )
    assert response.status_code == 404


def _embedded(page: str, element_id: str) -> Any:
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page)
    assert match, f"page embeds no {element_id}"
    return json.loads(html.unescape(match.group(1)))


def test_study_page_lists_lesions_biomarkers_and_the_comparison_mode(
    browser: TestClient, finished: dict[str, Any]
) -> None:
    _sign_in(browser, finished["key"])
    page = browser.get(f"/ui/studies/{finished['labelled']}")
    assert page.status_code == 200
    text = page.text
    assert 'id="lesions"' in text
    lesions = _embedded(text, "study-data")["lesions"]
    assert [(le["number"], le["bbox"]) for le in lesions] == [
        (1, [100, 100, 110, 120]),
        (2, [300, 200, 306, 204]),
    ]
    biomarkers = re.search(r'<dl class="kv" id="study-biomarkers">(.*?)</dl>', text, re.S)
    assert biomarkers
    pairs = re.findall(r"<dt[^>]*>(.*?)</dt><dd>(.*?)</dd>", biomarkers.group(1))
    assert dict(pairs) == {
        "tumor area (sTMTV)": "224 px · n/a",
        "lesions": "2",
        "sDmax": "223.6 px · n/a",
        "sDmax / body height": "0.500",
        "body height": "447 px · n/a",
        "body width": "300 px · n/a",
    }
    assert 'id="overlay-mode"' in text
    assert 'id="comparison-legend"' in text
    assert f"/ui/studies/{finished['labelled']}/comparison.png" in text
    plain = browser.get(f"/ui/studies/{finished['unlabelled']}").text
    assert 'id="lesions"' in plain
    assert 'id="overlay-mode"' not in plain
    assert "comparison.png" not in plain


def test_job_page_links_its_tables_and_the_ui_serves_them(
    browser: TestClient, finished: dict[str, Any], api_settings: Settings
) -> None:
    _sign_in(browser, finished["key"])
    job_id = finished["job"]
    page = browser.get(f"/ui/jobs/{job_id}").text
    for table in ("results", "lesions"):
        assert f'href="/ui/jobs/{job_id}/{table}.csv"' in page
        response = browser.get(f"/ui/jobs/{job_id}/{table}.csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert f'filename="job-{job_id}-{table}.csv"' in response.headers["content-disposition"]
        api = browser.get(f"/v1/jobs/{job_id}/{table}.csv", headers=bearer(finished["key"]))
        assert response.text == api.text  # the same table as the API's
    rows = list(csv.DictReader(io.StringIO(browser.get(f"/ui/jobs/{job_id}/lesions.csv").text)))
    assert [(r["filename"], r["number"], r["area_px"]) for r in rows] == [
        ("p1.png", "1", "200"),
        ("p1.png", "2", "24"),
        ("p2.png", "1", "200"),
        ("p2.png", "2", "24"),
    ]
    _sign_in(browser, create_api_key(api_settings.sqlalchemy_url, "ui-csv", tenant="csv-other"))
    assert browser.get(f"/ui/jobs/{job_id}/results.csv").status_code == 404


def test_the_root_redirects_to_the_viewer(browser: TestClient) -> None:
    response = browser.get("/", follow_redirects=False)
    assert response.status_code in (301, 302, 303, 307, 308)
    assert response.headers["location"] == "/ui"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/jobs/2147483000", 404),
        ("/ui/studies/2147483000", 404),
        ("/ui/studies/2147483000/input.png", 404),
        ("/ui/jobs/0", 422),
        ("/ui/jobs/abc", 422),
        ("/ui/no/such/page", 404),
    ],
)
def test_a_missing_job_or_study_in_the_viewer_is_an_html_page(
    browser: TestClient, api_settings: Settings, path: str, status: int
) -> None:
    _sign_in(browser, create_api_key(api_settings.sqlalchemy_url, "ui-missing"))
    response = browser.get(path)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="error-page"' in response.text
    assert 'href="/ui"' in response.text  # the way back
    assert response.headers["x-frame-options"] == "DENY"
    # the JSON that the pages poll stays JSON
    polled = browser.get("/ui/api/jobs/2147483000")
    assert polled.status_code == 404
    assert polled.json()["detail"] == "job 2147483000 not found"


def test_pages_show_statuses_as_words_and_the_job_name(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-words", tenant="words")
    files = [
        ("files", ("good.png", SAMPLE, "image/png")),
        ("files", ("broken.png", b"not a png", "image/png")),
    ]
    job = browser.post("/v1/jobs", files=files, data={"name": "ward 3"}, headers=bearer(key))
    good, broken = job.json()["studies"]
    assert broken["status"] == "failed"
    mask, _ = masks()
    succeed(api_settings.sqlalchemy_url, good["id"], mask)
    with session_scope(api_settings.sqlalchemy_url, unannounced) as session:
        status.refresh_jobs(session, [job.json()["id"]])
    _sign_in(browser, key)
    page = browser.get(f"/ui/jobs/{job.json()['id']}").text
    heading = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert heading
    assert 'data-status="partially_failed">partially failed</span>' in heading.group(1)
    assert "ward 3" in heading.group(1)
    assert '<option value="succeeded">succeeded</option>' in page
    listed = browser.get("/ui/api/jobs").json()["items"]
    assert [(j["name"], j["status"]) for j in listed][0] == ("ward 3", "partially_failed")


def test_the_upload_form_takes_a_name_and_a_pixel_spacing(
    browser: TestClient, api_settings: Settings
) -> None:
    key = create_api_key(api_settings.sqlalchemy_url, "ui-named", tenant="named")
    _sign_in(browser, key)
    page = browser.get("/ui").text
    assert 'name="name"' in page
    assert 'name="spacing_mm"' in page
    files = [("files", ("p.png", SAMPLE, "image/png"))]
    form = {"csrf": _csrf(page), "name": "lab run", "spacing_mm": "4,3.5"}
    response = browser.post("/ui/jobs", data=form, files=files, follow_redirects=False)
    assert response.status_code == 303, response.text
    job = browser.get(response.headers["location"].replace("/ui/", "/v1/"), headers=bearer(key))
    assert job.json()["name"] == "lab run"
    assert job.json()["studies"][0]["spacing_mm"] == [4.0, 3.5]
    bad = browser.post(
        "/ui/jobs", data={**form, "spacing_mm": "wide"}, files=files, follow_redirects=False
    )
    assert bad.status_code == 422
    assert "ROWS,COLUMNS" in bad.text
    assert 'id="upload-form"' in bad.text  # the form again, with the reason
