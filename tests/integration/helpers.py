"""Small builders shared by the API tests: datasets in the OpenAI preference format, uploads,
job bodies, and checks on the error envelope."""

from __future__ import annotations

import json

import httpx

MODEL = "tiny-random-llama"  # in the built-in registry; never loaded by the API


def preference_line(prompt: str = "hi", chosen: str = "a", rejected: str = "b") -> dict:
    return {"input": {"messages": [{"role": "user", "content": prompt}]},
            "preferred_output": [{"role": "assistant", "content": chosen}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}]}


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD_DATASET = jsonl([preference_line(f"question {i}", f"good {i}", f"bad {i}") for i in range(4)])


def upload(client: httpx.Client, data: bytes = GOOD_DATASET, purpose: str = "fine-tune",
           filename: str = "prefs.jsonl") -> httpx.Response:
    return client.post("/v1/files", files={"file": (filename, data, "application/jsonl")},
                       data={"purpose": purpose})


def dpo_body(training_file: str, **hyperparameters) -> dict:
    return {"model": MODEL, "training_file": training_file,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 2,
                                                                  **hyperparameters}}}}


def assert_envelope(response: httpx.Response, status: int, param: str | None = None,
                    code: str | None = None) -> dict:
    """The OpenAI error envelope with the expected status, param and code; returns the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error
