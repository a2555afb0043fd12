"""Schemathesis against the OpenAPI spec: every operation, with generated requests and with
requests aimed at stored rows, answers without a server error and within its schema, and
the fuzzer keeps to the service's rate limit for submissions.

Generated ids almost never name a row, and generated uploads are never images, so each
operation is also called with the ids of a seeded job (a labelled study that succeeded,
with its lesions, and a queued one) and, for the submissions, with a real PNG: the
answers behind validation (the job, its tables, the study's images, a 202, /predict's
wait) are checked too, and each operation must have reached one of them.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from config.settings import Settings
from tests.api.stored_results import SAMPLE, masks, png, succeed
from tests.conftest import bearer, create_api_key

#: Generated examples per operation (about fifteen operations, two database backends), and
#: examples aimed at the seeded rows.
MAX_EXAMPLES = 20
AIMED_EXAMPLES = 8
#: The fuzzed app's submission limit per key (POST /v1/jobs and /predict together), and the
#: fuzzer's pace for them, under it: every submission is admitted, so a 429 is a fault.
SUBMIT_RATE_PER_MINUTE = 600.0
SUBMIT_BURST = 10
FUZZER_SUBMIT_RATE = "8/s"

#: The spec does not depend on settings; the calls go to the session's app (below). The
#: submissions share one limiter.
_spec_only = Settings(database_url="sqlite://", redis_url="redis://127.0.0.1:1/0")  # type: ignore[call-arg]
schema = schemathesis.openapi.from_dict(
    create_app(_spec_only).openapi(),
    config=SchemathesisConfig.from_dict(
        {"operations": [{"include-method": "POST", "rate-limit": FUZZER_SUBMIT_RATE}]}
    ),
)
OPERATIONS = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}
SUBMISSIONS = {"POST /v1/jobs", "POST /predict"}


@dataclass(frozen=True)
class Seeded:
    """Rows the aimed requests name: a job of two studies, the first labelled and
    succeeded (mask, lesions, comparison), the second queued."""

    job_id: int
    study_id: int


@pytest.fixture(scope="session")
def fuzz_app(api_settings: Settings) -> FastAPI:
    """The API on a queue no worker consumes (a fuzzed job never runs), with a finite rate
    limit for submissions."""
    return create_app(
        api_settings.model_copy(
            update={
                "predict_timeout": 0.2,
                "submit_rate_per_minute": SUBMIT_RATE_PER_MINUTE,
                "submit_burst": SUBMIT_BURST,
            }
        )
    )


@pytest.fixture(scope="session")
def fuzz_key(api_settings: Settings) -> str:
    """A client key for the fuzzer's requests."""
    return create_api_key(api_settings.sqlalchemy_url, "fuzzer")


@pytest.fixture(scope="session")
def seeded(fuzz_app: FastAPI, fuzz_key: str, api_settings: Settings) -> Seeded:
    """A job submitted through the API, its first study then stored as succeeded."""
    mask, label = masks()
    files = [
        ("files", ("p1.png", SAMPLE, "image/png")),
        ("files", ("p2.png", SAMPLE, "image/png")),
        ("labels", ("p1.png", png(label), "image/png")),
    ]
    with TestClient(fuzz_app, headers=bearer(fuzz_key)) as client:
        response = client.post("/v1/jobs", files=files, data={"name": "seeded"})
    assert response.status_code == 202, response.text
    job = response.json()
    study_id = job["studies"][0]["id"]
    succeed(api_settings.sqlalchemy_url, study_id, mask)
    return Seeded(job["id"], study_id)


def _no_server_error(ctx: object, response: schemathesis.Response, case: object) -> bool:
    assert (
        response.status_code < 500
        or response.status_code in (503, 504)
        and ("queue" in response.text or "worker" in response.text)
    ), f"{response.status_code}: {response.text[:300]}"
    return True


def _within_the_rate_limit(ctx: object, response: schemathesis.Response, case: object) -> bool:
    assert response.status_code != 429, "the fuzzer keeps under the limit: nothing is refused"
    return True


CHECKS = [
    _no_server_error,
    _within_the_rate_limit,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _aimed(label: str, seeded: Seeded) -> dict[str, Any]:
    """The fixed parts of a request aimed past validation: stored ids, a real image."""
    operation = OPERATIONS[label]
    names = {p.name for p in operation.path_parameters}
    fixed: dict[str, Any] = {}
    ids = {"job_id": seeded.job_id, "study_id": seeded.study_id}
    if names:
        fixed["path_parameters"] = {name: ids[name] for name in names}
    if label == "POST /v1/jobs":
        fixed.update(body={"files": [SAMPLE]}, media_type="multipart/form-data")
    if label == "POST /predict":
        fixed.update(body={"img": base64.b64encode(SAMPLE).decode()})
    return fixed


#: The first and the last day a `format: date` value can name.
DATE_EDGES = ["0001-01-01", "9999-12-31"]


def _edges(parameter: dict[str, Any]) -> list[Any]:
    """Values at and just beyond the ends of a parameter's documented range: each bound of
    an integer and its neighbours, the extreme days of a date."""
    values: list[Any] = []
    for option in parameter.get("anyOf", [parameter]):
        if option.get("type") == "integer":
            for bound in (option.get("minimum"), option.get("maximum")):
                if bound is not None:
                    values += [bound - 1, bound, bound + 1]
        if option.get("format") == "date":
            values += DATE_EDGES
    return values


def _edge_cases(label: str, seeded: Seeded) -> list[schemathesis.Case]:
    """One request per edge value of each path and query parameter, the others aimed at
    the seeded rows."""
    operation = OPERATIONS[label]
    fixed = _aimed(label, seeded)
    cases = []
    for location in ("path_parameters", "query"):
        for parameter in getattr(operation, location):
            for value in _edges(parameter.definition["schema"]):
                parts = {**fixed, "query": {}}
                parts[location] = {**parts.get(location, {}), parameter.name: value}
                cases.append(operation.Case(**parts))
    return cases


def _reached(label: str, status: int) -> bool:
    """Whether an answer came from past validation: a 2xx, or for /predict the end of its
    wait (no worker consumes the fuzzed app's queue)."""
    return status == 504 if label == "POST /predict" else 200 <= status < 300


def _run(
    strategy: Any, examples: int, call: Callable[[schemathesis.Case], int], statuses: list[int]
) -> None:
    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        statuses.append(call(case))

    run()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_within_its_schema(
    label: str, fuzz_app: FastAPI, fuzz_key: str, seeded: Seeded
) -> None:
    operation = OPERATIONS[label]
    schema.app = fuzz_app  # in-process ASGI calls

    def call(case: schemathesis.Case) -> int:
        response = case.call_and_validate(app=fuzz_app, headers=bearer(fuzz_key), checks=CHECKS)
        return int(response.status_code)

    generated: list[int] = []
    _run(operation.as_strategy(), MAX_EXAMPLES, call, generated)
    aimed: list[int] = []
    _run(operation.as_strategy(**_aimed(label, seeded)), AIMED_EXAMPLES, call, aimed)
    aimed += [call(case) for case in _edge_cases(label, seeded)]
    assert any(_reached(label, s) for s in generated + aimed), (
        f"{label} never got past validation: generated {Counter(generated)}, aimed {Counter(aimed)}"
    )


def test_the_fuzzer_reaches_every_operation_of_the_spec() -> None:
    spec = create_app(_spec_only).openapi()
    documented = {f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item}
    assert set(OPERATIONS) == documented
    assert documented >= SUBMISSIONS
