"""API keys: every /v1 route and /predict need one, jobs are visible per tenant."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from config.settings import Settings
from db.models import ApiKey
from db.session import session_scope
from tests.conftest import REPO_ROOT, SAMPLE_IMGS, bearer, create_api_key, settings_env

SAMPLE = (SAMPLE_IMGS / "patient_000.png").read_bytes()
FILES = [("files", ("a.png", SAMPLE, "image/png"))]

#: (method, path template) of every route that needs a key; {job} and {study} are filled in.
PROTECTED = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job}"),
    ("DELETE", "/v1/jobs/{job}"),
    ("GET", "/v1/jobs/{job}/results.csv"),
    ("GET", "/v1/jobs/{job}/lesions.csv"),
    ("GET", "/v1/studies/{study}"),
    ("GET", "/v1/studies/{study}/mask.png"),
    ("GET", "/v1/studies/{study}/overlay.png"),
    ("GET", "/v1/studies/{study}/comparison.png"),
    ("POST", "/predict"),
]


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    if method == "POST" and path == "/predict":
        body = {"img": base64.b64encode(SAMPLE).decode()}
        return client.post(path, json=body, headers=headers).status_code
    if method == "POST":
        return client.post(path, files=FILES, headers=headers).status_code
    return client.request(method, path, headers=headers).status_code


@pytest.fixture(scope="module")
def owned_job(client: TestClient) -> dict[str, int]:
    """A job of the default tenant (the ``client`` fixture's key)."""
    job = client.post("/v1/jobs", files=FILES).json()
    return {"job": job["id"], "study": job["studies"][0]["id"]}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "auth", ["none", "garbage", "not-bearer", "revoked"], ids=lambda a: f"auth={a}"
)
def test_routes_refuse_requests_without_a_valid_key_with_401(
    client: TestClient,
    api_settings: Settings,
    owned_job: dict[str, int],
    method: str,
    path: str,
    auth: str,
) -> None:
    headers = {
        "none": {"Authorization": ""},
        "garbage": bearer("tsk_definitely-not-a-key"),
        "not-bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "revoked": bearer(_revoked_key(api_settings)),
    }[auth]
    status = _call(client, method, path.format(**owned_job), headers)
    assert status == 401


def _revoked_key(settings: Settings) -> str:
    from db.repositories import api_keys as keys_repo

    key = create_api_key(settings.sqlalchemy_url, "revoked")
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).first()
        assert row is not None
        keys_repo.revoke(session, row.id)
    return key


def test_401_names_the_scheme_and_health_stays_open(client: TestClient) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/readyz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/openapi.json", headers={"Authorization": ""}).status_code == 200


@pytest.mark.parametrize(("method", "path"), [p for p in PROTECTED if "{" in p[1]])
def test_another_tenant_gets_404_for_every_job_and_study_route(
    client: TestClient,
    api_settings: Settings,
    owned_job: dict[str, int],
    method: str,
    path: str,
) -> None:
    other = bearer(create_api_key(api_settings.sqlalchemy_url, "rival", tenant="rival-clinic"))
    assert _call(client, method, path.format(**owned_job), other) == 404
    # and the job is untouched (a rival's DELETE cancelled nothing)
    assert client.get(f"/v1/jobs/{owned_job['job']}").json()["counts"]["cancelled"] == 0


def test_listing_is_per_tenant_and_admin_sees_all(
    client: TestClient, api_settings: Settings
) -> None:
    url = api_settings.sqlalchemy_url
    rival = bearer(create_api_key(url, "rival", tenant="rival-clinic"))
    admin = bearer(create_api_key(url, "ops", admin=True))
    mine = client.post("/v1/jobs", files=FILES).json()["id"]
    theirs = client.post("/v1/jobs", files=FILES, headers=rival).json()["id"]

    my_ids = {j["id"] for j in client.get("/v1/jobs", params={"limit": 200}).json()["items"]}
    their_page = client.get("/v1/jobs", params={"limit": 200}, headers=rival).json()
    all_ids = {
        j["id"]
        for j in client.get("/v1/jobs", params={"limit": 200}, headers=admin).json()["items"]
    }
    assert mine in my_ids
    assert theirs not in my_ids
    assert {j["id"] for j in their_page["items"]} == {theirs}
    assert their_page["total"] == 1
    assert {mine, theirs} <= all_ids
    assert client.get(f"/v1/jobs/{theirs}", headers=admin).status_code == 200
    assert client.get(f"/v1/jobs/{theirs}", headers=rival).status_code == 200


def test_keys_create_prints_the_key_last_and_stores_only_its_hash(settings: Settings) -> None:
    env = settings_env(settings)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--name", "lab pc", "--tenant", "lab-7"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip().splitlines()[-1]
    assert key.startswith("tsk_")
    assert len(key) >= 40
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.name == "lab pc")).one()
        stored = [str(v) for v in (row.key_hash, row.prefix, row.name, row.tenant)]
        assert row.tenant == "lab-7"
        assert not row.is_admin
    assert all(key not in value for value in stored)  # only the hash and a short prefix
    assert len(row.key_hash) == 64
    assert key.startswith(row.prefix)

    bad = subprocess.run(
        [sys.executable, "-m", "cli", "keys", "create", "--name", "x", "--tenant", "a b/../c"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "tenant" in bad.stderr


def test_every_documented_route_but_health_needs_a_key(client: TestClient) -> None:
    """Walks the OpenAPI paths, so a route added later cannot forget the key."""
    checked = 0
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path in {"/healthz", "/readyz"}:
            continue
        concrete = re.sub(r"{[^}]+}", "1", path)
        for method in operations:
            response = client.request(method.upper(), concrete, headers={"Authorization": ""})
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
    assert checked >= len(PROTECTED)
