"""The official `openai` client in strict mode (every response validated against the SDK's types)
drives the whole fine-tuning flow against a real API and worker: an SFT job on OpenAI's chat
format (weights, content parts) with a W&B integration the worker cannot honour, its events,
checkpoints and result file, a DPO job chained on the SFT job's model, and /v1/models."""

from __future__ import annotations

import csv
import io
import time

import openai
import pytest

from tests.integration.helpers import MODEL, jsonl, preference_line

pytestmark = pytest.mark.integration

PROJECT = "default"  # the open install's project
CHAT = jsonl([{"messages": [
    {"role": "user", "content": [{"type": "text", "text": f"Add {i} "}, {"type": "text", "text": f"and {i}."}]},
    {"role": "assistant", "content": "Let me think.", "weight": 0},
    {"role": "user", "content": "Just the number."},
    {"role": "assistant", "content": f"{2 * i}"}]} for i in range(4)])
PAIRS = jsonl([preference_line(f"Add {i} and {i}.", f"{2 * i}", f"Maybe {2 * i + 1}?") for i in range(4)])
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def client(api_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_server}/v1", api_key="test", max_retries=0, timeout=30,
                         _strict_response_validation=True)


def finished(client: openai.OpenAI, job_id: str, worker, timeout: float = 150):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        assert worker.poll() is None, worker.log_path.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {job.status}:\n{worker.log_path.read_text()[-3000:]}")


def test_supervised_then_chained_dpo_with_models_and_result_files(client, worker):
    chat = client.files.create(file=("chat.jsonl", CHAT), purpose="fine-tune")
    sft = client.fine_tuning.jobs.create(
        model=MODEL, training_file=chat.id, suffix="sft", seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2}}},
        integrations=[{"type": "wandb", "wandb": {"project": "rlhf-tests", "tags": ["ci"]}}])
    assert sft.integrations[0].wandb.project == "rlhf-tests" and sft.result_files == []
    sft = finished(client, sft.id, worker)
    assert sft.status == "succeeded", sft.error
    assert sft.fine_tuned_model == f"ft:{MODEL}:{PROJECT}:sft:{sft.id}"

    events = list(client.fine_tuning.jobs.list_events(sft.id, limit=200))
    assert {e.level for e in events} <= {"info", "warn", "error"}  # strict mode checked it too
    assert any(e.level == "warn" and "W&B" in e.message for e in events)  # no wandb: a warning, no failure
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(m["train_loss"] == m["loss"] and m["step"] >= 1 for m in metrics)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(sft.id).data
    assert checkpoints and all(c.metrics.train_loss is not None and c.metrics.step == c.step_number
                               and 0 <= c.metrics.train_mean_token_accuracy <= 1 for c in checkpoints)
    assert {c.fine_tuned_model_checkpoint for c in checkpoints} == {
        f"{sft.fine_tuned_model}:ckpt-step-{c.step_number}" for c in checkpoints}

    (results_id,) = sft.result_files
    results = client.files.retrieve(results_id)
    assert results.purpose == "fine-tune-results"
    assert results_id in {f.id for f in client.files.list(purpose="fine-tune-results")}
    rows = list(csv.DictReader(io.StringIO(client.files.content(results_id).text)))
    assert rows and [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["train_accuracy"]) <= 1 for r in rows)

    # DPO on the SFT job's model: the chained job names it as its model.
    pairs = client.files.create(file=("pairs.jsonl", PAIRS), purpose="fine-tune")
    dpo = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model, training_file=pairs.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1, "batch_size": 2}}})
    assert dpo.model == sft.fine_tuned_model
    dpo = finished(client, dpo.id, worker)
    assert dpo.status == "succeeded", dpo.error
    assert dpo.fine_tuned_model == f"ft:{MODEL}:{PROJECT}::{dpo.id}"  # the base is the registry model
    assert len(dpo.result_files) == 1

    listed = {m.id: m for m in client.models.list()}
    assert listed[MODEL].owned_by == "system"
    assert listed[sft.fine_tuned_model].owned_by == listed[dpo.fine_tuned_model].owned_by == PROJECT
    assert client.models.retrieve(dpo.fine_tuned_model).created == dpo.finished_at

    user = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=pairs.id, method={"type": "dpo"})
    with pytest.raises(openai.ConflictError):  # an unfinished job starts from it
        client.models.delete(sft.fine_tuned_model)
    client.fine_tuning.jobs.cancel(user.id)
    deleted = client.models.delete(sft.fine_tuned_model)
    assert deleted.deleted and deleted.id == sft.fine_tuned_model
    assert sft.fine_tuned_model not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(sft.fine_tuned_model)
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=pairs.id, method={"type": "dpo"})
    assert refused.value.code == "model_not_available" and refused.value.param == "model"
    # A checkpoint of it is still a starting point (its own files were not deleted).
    from_checkpoint = client.fine_tuning.jobs.create(model=checkpoints[0].fine_tuned_model_checkpoint,
                                                     training_file=pairs.id, method={"type": "dpo"})
    client.fine_tuning.jobs.cancel(from_checkpoint.id)
