"""Schemathesis against the live server's OpenAPI schema (open mode, `idle_api`): generated and
boundary-value requests for every operation; no 5xx, only documented status codes and content
types, and every response body valid against the schema (including the 4xx/5xx envelope).

Bounded to stay well under a minute: random fuzzing is limited to a few examples per operation,
and the exhaustive "coverage" phase (every boundary the schema defines) runs for all operations
but job creation, whose nested method schema yields hundreds of cases; job bodies get fuzzing
here and a hand-written corpus in test_bad_input.py and test_api_jobs.py.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CREATE_JOB = "/v1/fine_tuning/jobs"


def _load(url: str, phases: list[str]):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.phases.update(phases=phases)
    return schema


@pytest.fixture(scope="module")
def every_operation(idle_api):
    return _load(idle_api.url, ["examples", "coverage", "fuzzing"])


@pytest.fixture(scope="module")
def job_creation(idle_api):
    return _load(idle_api.url, ["examples", "fuzzing"])


def _call(case) -> None:
    # A stream follows a job for as long as it lives; the SSE tests cover streams.
    if case.query and str(case.query.get("stream", "")).lower() in ("true", "1", "yes", "on"):
        case.query["stream"] = "false"
    case.call_and_validate(checks=CHECKS, timeout=20)


_SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schemathesis.pytest.from_fixture("every_operation").exclude(method="POST", path=CREATE_JOB).parametrize()
@_SETTINGS
def test_every_operation_conforms(case):
    _call(case)


@schemathesis.pytest.from_fixture("job_creation").include(method="POST", path=CREATE_JOB).parametrize()
@_SETTINGS
def test_job_creation_conforms(case):
    _call(case)
