"""Schemathesis against the live server's OpenAPI schema (open mode, `idle_api`): generated and
boundary-value requests for every operation; no 5xx, only documented status codes and content
types, and every response body valid against the schema (including the 4xx/5xx envelope).
A second server requires keys: every operation again, once with a project's key (its ids are
nobody's, so 404s and 400s) and once without (401 on every /v1 route).

Bounded to stay well under a minute: random fuzzing is limited to a few examples per operation,
and the exhaustive "coverage" phase (every boundary the schema defines) runs for all operations
but job creation, whose nested method schema yields hundreds of cases; job bodies get fuzzing
here and a hand-written corpus in test_bad_input.py and test_api_jobs.py.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CREATE_JOB = "/v1/fine_tuning/jobs"
CHAT = "/v1/chat/completions"


def _checks(case) -> list:
    # These servers have no inference backend, so a valid chat request is a 503 by design
    # (inference_not_configured); its envelope must still conform. test_chat_completions.py
    # covers the route with a backend.
    return [c for c in CHECKS if c is not not_a_server_error] if case.path == CHAT else CHECKS


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


def _no_streams(case) -> None:
    # A stream follows a job for as long as it lives; the SSE tests cover streams.
    if case.query and str(case.query.get("stream", "")).lower() in ("true", "1", "yes", "on"):
        case.query["stream"] = "false"


def _call(case) -> None:
    _no_streams(case)
    case.call_and_validate(checks=_checks(case), timeout=20)


_SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schemathesis.pytest.from_fixture("every_operation").exclude(method="POST", path=CREATE_JOB).parametrize()
@_SETTINGS
def test_every_operation_conforms(case):
    _call(case)


@schemathesis.pytest.from_fixture("job_creation").include(method="POST", path=CREATE_JOB).parametrize()
@_SETTINGS
def test_job_creation_conforms(case):
    _call(case)


@pytest.fixture(scope="module")
def keyed_api(start_api, make_database, tmp_path_factory):
    # Rate limit off: a burst of generated requests must meet the checks, not a 429.
    server = own_server(start_api, make_database, tmp_path_factory, auth_required=True, rate_limit_per_minute=0)
    return server, make_tenant(server)


@pytest.fixture(scope="module")
def keyed_operations(keyed_api):
    return _load(keyed_api[0].url, ["examples", "fuzzing"])


@schemathesis.pytest.from_fixture("keyed_operations").parametrize()
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_conforms_with_and_without_a_key(case, keyed_api):
    _, tenant = keyed_api
    _no_streams(case)
    case.call_and_validate(checks=_checks(case), timeout=20, headers={"Authorization": f"Bearer {tenant.key}"})
    response = case.call_and_validate(checks=_checks(case), timeout=20, headers={"Authorization": ""})
    if case.path.startswith("/v1/"):
        assert response.status_code == 401, (case.method, case.path, response.text)


ENUMS = {("Event", "level"): ["info", "warn", "error"], ("Event", "type"): ["message", "metrics"],
         ("FineTuningJob", "status"): ["validating_files", "queued", "running", "succeeded", "failed", "cancelled",
                                       "paused"],
         ("FileObject", "purpose"): ["fine-tune", "fine-tune-results"], ("Deleted", "object"): ["file", "model"]}


def test_the_schema_holds_openais_enums_and_catches_a_value_outside_them(every_operation, idle_api):
    import httpx

    from tests.integration.helpers import dpo_body, upload

    components = every_operation.raw_schema["components"]["schemas"]
    for (name, field), values in ENUMS.items():
        assert components[name]["properties"][field]["enum"] == values, (name, field)
    assert {"error", "fine_tuned_model", "result_files", "integrations"} <= set(components["FineTuningJob"]["required"])

    events = every_operation["/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"]["GET"]
    with httpx.Client(base_url=idle_api.url, timeout=20) as client:
        job = client.post("/v1/fine_tuning/jobs", json=dpo_body(upload(client).json()["id"])).json()
        good = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events")
    events.validate_response(good)
    body = good.json()
    body["data"][0]["level"] = "warning"  # what the workers used to write
    edited = httpx.Response(200, json=body, request=good.request)
    edited.elapsed = good.elapsed
    with pytest.raises(Exception, match="warning"):
        events.validate_response(edited)
