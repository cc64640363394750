"""Job controls and outputs on the open-mode `idle_api` (no worker, so jobs stay where we put
them): pause/resume, Idempotency-Key, progress and ETA, metric ranges and downsampling, and the
rule that a file cannot be deleted while an unfinished job needs it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from service.shared.store.models import JobRow, MetricRow, new_id
from tests.integration.helpers import assert_envelope, dpo_body

pytestmark = pytest.mark.integration


def job_row(db, job_id: str) -> JobRow:
    db.rollback()
    return db.scalar(select(JobRow).where(JobRow.id == job_id))


def queue_length(redis_url: str, queue: str) -> int:
    import redis

    return redis.Redis.from_url(redis_url).llen(queue)


def test_pause_and_resume(client, file_id, idle_db, idle_api, redis_url):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    jobs = f"/v1/fine_tuning/jobs/{job_id}"
    assert client.post(f"{jobs}/pause").json()["status"] == "paused"
    assert_envelope(client.post(f"{jobs}/pause"), 409, code="job_not_pausable")
    assert_envelope(client.delete(f"/v1/files/{file_id}"), 409, code="file_in_use")  # paused still needs it

    # The worker has not released its lease yet: resuming now would send a message nobody can take.
    row = job_row(idle_db, job_id)
    row.lease_owner, row.lease_expires_at = "worker-1", time.time() + 60
    idle_db.commit()
    assert_envelope(client.post(f"{jobs}/resume"), 409, code="job_still_pausing")
    row.lease_owner, row.lease_expires_at = None, None
    idle_db.commit()

    before = queue_length(redis_url, idle_api.settings["queue"])
    assert client.post(f"{jobs}/resume").json()["status"] == "queued"
    assert queue_length(redis_url, idle_api.settings["queue"]) == before + 1  # sent to the workers again
    assert_envelope(client.post(f"{jobs}/resume"), 409, code="job_not_resumable")
    messages = [e["message"] for e in client.get(f"{jobs}/events").json()["data"]]
    assert messages[:2] == ["Job resumed; it continues from its latest checkpoint", "Job paused"]

    client.post(f"{jobs}/pause")
    assert client.post(f"{jobs}/cancel").json()["status"] == "cancelled"  # a paused job can be cancelled
    assert_envelope(client.post(f"{jobs}/pause"), 409, code="job_not_pausable")
    assert client.delete(f"/v1/files/{file_id}").json()["deleted"] is True


def test_idempotency_key(client, file_id, idle_db):
    key = {"Idempotency-Key": new_id("idem")}
    first = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id), headers=key)
    again = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id), headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    idle_db.rollback()
    assert idle_db.scalar(select(func.count()).select_from(JobRow).where(
        JobRow.idempotency_key == key["Idempotency-Key"])) == 1
    assert_envelope(client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id, beta=0.3), headers=key),
                    409, code="idempotency_key_reused")
    # Without a key every request is a new job.
    ids = {client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"] for _ in range(2)}
    assert len(ids) == 2


def test_progress_and_estimated_finish(client, file_id, idle_db):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()
    assert (job_id["steps_completed"], job_id["total_steps"], job_id["estimated_finish"]) == (0, None, None)
    row = job_row(idle_db, job_id["id"])
    start = int(time.time()) - 100
    row.status, row.started_at, row.steps_completed, row.total_steps = "running", start, 10, 30  # as a worker would
    idle_db.commit()
    job = client.get(f"/v1/fine_tuning/jobs/{row.id}").json()
    assert (job["steps_completed"], job["total_steps"]) == (10, 30)
    # 10 steps in ~100 s: 20 more take ~200 s.
    assert abs(job["estimated_finish"] - (int(time.time()) + 200)) <= 25, job
    client.post(f"/v1/fine_tuning/jobs/{row.id}/cancel")
    assert client.get(f"/v1/fine_tuning/jobs/{row.id}").json()["estimated_finish"] is None


def test_metrics_range_kind_and_downsampling(client, file_id, idle_db):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    idle_db.add_all([MetricRow(job_id=job_id, step=s, kind="train", values={"loss": 1 / s}) for s in range(1, 101)])
    idle_db.add_all([MetricRow(job_id=job_id, step=s, kind="eval", values={"eval/loss": 1.0}) for s in (50, 100)])
    idle_db.commit()
    url = f"/v1/fine_tuning/jobs/{job_id}/metrics"

    assert len(client.get(url).json()["data"]) == 102
    train = client.get(url, params={"kind": "train", "max_points": 10}).json()["data"]
    steps = [m["step"] for m in train]
    assert len(steps) == 10 and steps[0] == 1 and steps[-1] == 100 and steps == sorted(steps)
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced
    ranged = client.get(url, params={"min_step": 20, "max_step": 29, "kind": "train"}).json()["data"]
    assert [m["step"] for m in ranged] == list(range(20, 30))
    both = client.get(url, params={"max_points": 2}).json()["data"]
    assert [(m["step"], m["kind"]) for m in both] == [(1, "train"), (50, "eval"), (100, "eval"), (100, "train")]
    assert client.get(url, params={"kind": "nope"}).json()["data"] == []
    assert_envelope(client.get(url, params={"max_points": 0}), 400, param="max_points")
