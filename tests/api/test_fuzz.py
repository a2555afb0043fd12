"""Schemathesis against the OpenAPI spec: no 5xx, and every response fits the schema."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from config.settings import Settings
from tests.conftest import bearer, create_api_key

#: Examples per operation: about ten operations, two database backends, well under 60 s.
MAX_EXAMPLES = 20


@pytest.fixture(scope="session")
def fuzz_app(api_settings: Settings) -> FastAPI:
    """The API on a queue no worker consumes (a fuzzed job never runs)."""
    return create_app(api_settings.model_copy(update={"predict_timeout": 0.2}))


@pytest.fixture(scope="session")
def fuzz_key(api_settings: Settings) -> str:
    """A client key for the fuzzer's requests."""
    return create_api_key(api_settings.sqlalchemy_url, "fuzzer")


#: The spec does not depend on settings; the calls go to the session's app (below).
_spec_only = Settings(database_url="sqlite://", redis_url="redis://127.0.0.1:1/0")  # type: ignore[call-arg]
schema = schemathesis.openapi.from_dict(create_app(_spec_only).openapi())


def _no_server_error(ctx: object, response: schemathesis.Response, case: object) -> bool:
    assert (
        response.status_code < 500
        or response.status_code in (503, 504)
        and ("queue" in response.text or "worker" in response.text)
    ), f"{response.status_code}: {response.text[:300]}"
    return True


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_answers_every_generated_request_within_its_schema(
    case: schemathesis.Case, fuzz_app: FastAPI, fuzz_key: str
) -> None:
    case.operation.schema.app = fuzz_app  # in-process ASGI calls; lifespan run once
    case.call_and_validate(
        app=fuzz_app,
        headers=bearer(fuzz_key),
        checks=[
            _no_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
