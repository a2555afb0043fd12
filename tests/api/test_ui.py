"""The web viewer over HTTP: sign-in, cookie flags, CSRF tokens and tenant isolation."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from db.repositories import api_keys as keys_repo
from db.session import session_scope
from tests.conftest import SAMPLE_IMGS, bearer, create_api_key

SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()
PROTECTED_PAGES = ["/ui", "/ui/jobs/1", "/ui/studies/1", "/ui/studies/1/input.png", "/ui/api/jobs"]


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
