"""The official `openai` package, pointed at the service, does the user's side of the walking
skeleton: upload, create, retrieve, list, events, checkpoints, cancel, and typed errors."""

from __future__ import annotations

import openai
import pytest

from tests.integration.helpers import GOOD_DATASET, MODEL

pytestmark = pytest.mark.integration

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1, "batch_size": 2}}}


@pytest.fixture
def client(idle_api) -> openai.OpenAI:
    # No worker consumes this server's queue, so cancel always finds the job unfinished.
    return openai.OpenAI(base_url=f"{idle_api.url}/v1", api_key="test", max_retries=0, timeout=30)


@pytest.fixture
def training_file(client) -> str:
    f = client.files.create(file=("prefs.jsonl", GOOD_DATASET), purpose="fine-tune")
    assert f.object == "file" and f.id.startswith("file-") and f.bytes == len(GOOD_DATASET)
    return f.id


def test_create_retrieve_list_events_checkpoints_cancel(client, training_file):
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training_file, method=DPO, seed=3)
    assert job.status == "queued" and job.model == MODEL and job.seed == 3
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1

    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id

    others = [client.fine_tuning.jobs.create(model=MODEL, training_file=training_file, method=DPO).id
              for _ in range(2)]
    page = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == others[::-1] and page.has_more
    seen = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # iterating follows `after`
    assert seen[:3] == [*others[::-1], job.id] and len(seen) == len(set(seen))

    events = client.fine_tuning.jobs.list_events(job.id, limit=10)
    assert events.data[-1].message == f"Validating training file: {training_file}"
    assert all(e.object == "fine_tuning.job.event" for e in events.data)

    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_bad_requests_raise_typed_errors_with_the_envelope(client, training_file):
    bad = {"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=MODEL, training_file=training_file, method=bad)
    err = caught.value
    assert err.status_code == 400
    assert err.param == "method.dpo.hyperparameters.beta" and err.code == "invalid_value"
    assert err.type == "invalid_request_error" and "beta" in err.message
    assert set(err.body) >= {"message", "type", "param", "code"}

    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", b'{"input": {}}\n'), purpose="fine-tune")
    assert "line 1" in caught.value.message

    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-unknown")
