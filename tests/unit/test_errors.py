"""The error envelope for every kind of failure, checked in-process (no database needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.testclient import TestClient

from service.api import errors
from service.api.schemas import JobCreate


def make_client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.post("/jobs")
    def create(body: JobCreate) -> dict:
        return {"method": body.method.type if body.method else None}

    @app.post("/files")
    def upload(file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> dict:
        return {}

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internal detail")

    @app.get("/conflict")
    def conflict() -> dict:
        raise errors.APIError(409, "busy", param="id", code="busy", extra={"hint": 1})

    return TestClient(app, raise_server_exceptions=False)


def post(client: TestClient, body) -> dict:
    r = client.post("/jobs", json=body)
    assert r.status_code == 400 and r.headers["x-should-retry"] == "false"
    return r.json()["error"]


BASE = {"model": "m", "training_file": "file-1"}


def test_body_errors_name_the_field_path():
    client = make_client()
    e = post(client, {**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}})
    assert e["param"] == "method.dpo.hyperparameters.beta" and "beta must be" in e["message"]
    assert not e["message"].count("Value error")
    e = post(client, {**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": [1]}}}})
    assert e["param"] == "method.dpo.hyperparameters.batch_size"  # not a union member's label
    assert " or " in e["message"]  # both alternatives ("auto", an integer) are named
    e = post(client, {**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"lora": {"r": 0}}}}})
    assert e["param"] == "method.dpo.hyperparameters.lora.r"
    e = post(client, {**BASE, "metadata": {"k": 1}})
    assert e["param"] == "metadata.k"


def test_unknown_and_missing_fields():
    client = make_client()
    e = post(client, {**BASE, "n_epochs": 3})
    assert (e["param"], e["code"], e["type"]) == ("n_epochs", "unknown_parameter", "invalid_request_error")
    assert "n_epochs" in e["message"]
    e = post(client, {"model": "m"})
    assert (e["param"], e["code"]) == ("training_file", "missing_required_parameter")
    e = post(client, ["not", "an", "object"])
    assert e["param"] is None and e["code"] == "invalid_value"
    assert e["message"] == "The request body must be a JSON object."


def test_body_that_is_not_json_names_the_content_type():
    # FastAPI does not parse a text/plain body: valid JSON there must not read as a bad value.
    r = make_client().post("/jobs", content=b'{"model": "m", "training_file": "f"}',
                           headers={"content-type": "text/plain"})
    e = r.json()["error"]
    assert (r.status_code, e["param"], e["code"]) == (400, None, "invalid_value")
    assert "Content-Type: application/json" in e["message"], e


def test_form_fields_are_named():
    # A multipart form is walked like a JSON object, so a text field sent as `file` is named.
    r = make_client().post("/files", data={"purpose": "fine-tune", "file": "abc"})
    e = r.json()["error"]
    assert (r.status_code, e["param"], e["code"]) == (400, "file", "invalid_value")
    assert "multipart/form-data" in e["message"] and "<class" not in e["message"], e


def test_routing_errors_and_crashes_use_the_envelope():
    client = make_client()
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = client.delete("/jobs")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"message": "The server had an error while processing your request.",
                                  "type": "server_error", "param": None, "code": "internal_error"}}
    r = client.get("/conflict")
    assert r.status_code == 409 and r.json()["error"] == {
        "message": "busy", "type": "invalid_request_error", "param": "id", "code": "busy", "hint": 1}
