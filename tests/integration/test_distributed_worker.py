"""A worker with RLHF_TRAIN_PROCESSES=2 runs each job on two gloo ranks under PyTorch's elastic
launcher (worker/ranks.py): the job succeeds with rank 0 reporting every step once, a SIGKILL of
one rank ends the attempt with no rank left behind and the job resumes from its checkpoint, and a
cancel reaches both ranks; a REFUEL job collects on both ranks and rank 0 alone reports its
iterations and evaluation. Real uvicorn, Celery, Postgres, Redis and the tiny model."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.failure_helpers import assert_ran_cleanly, make_stack  # noqa: F401
from tests.integration.helpers import jsonl, upload

pytestmark = pytest.mark.integration


def ranks_of(pid: int) -> dict[int, int]:
    """RANK -> pid of the ranks under the job's child (torchrun's children), read from /proc."""
    parents, env_of = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int(next(line for line in (entry / "status").read_text().splitlines()
                                                if line.startswith("PPid:")).split()[1])
            env_of[int(entry.name)] = dict(item.split("=", 1) for item in (entry / "environ").read_bytes()
                                           .decode(errors="replace").split("\0") if "=" in item)
        except (OSError, StopIteration, ValueError):
            continue

    def under(p: int) -> bool:
        while p in parents and p > 1:
            p = parents[p]
            if p == pid:
                return True
        return False

    return {int(env["RANK"]): p for p, env in env_of.items() if "LOCAL_RANK" in env and "RANK" in env and under(p)}


def gone(pids, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()
                   for p in pids):
            return True
        time.sleep(0.2)
    return False


def wait_ranks(stack, job_id, n=2, timeout=120) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = stack.row(job_id)
        assert row["lease_owner"], (row, stack.logs())
        found = ranks_of(stack.running_pid(job_id))
        if len(found) == n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {n} ranks: {stack.logs()}")


def test_two_ranks_succeed_and_resume_after_one_is_killed(make_stack):
    stack = make_stack(lease_seconds=6, train_processes=2)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=4, checkpoint_interval=4)  # 16 steps, checkpoints every 4
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 6, what="step 6")
    ranks = wait_ranks(stack, job_id)
    os.kill(ranks[1], signal.SIGKILL)
    assert gone(ranks.values()), "a rank outlived the attempt"  # the launcher stopped rank 0

    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 16)
    assert stack.row(job_id)["attempts"] == 2
    resumed = [e["data"]["step"] for e in stack.events(job_id) if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0] >= 4, stack.messages(job_id)


def test_cancel_reaches_both_ranks(make_stack):
    stack = make_stack(lease_seconds=6, train_processes=2)
    stack.start_worker()
    job_id = stack.create_job(n_epochs=100)
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 2, what="step 2")
    ranks = wait_ranks(stack, job_id)
    response = stack.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert gone(ranks.values()), "a rank kept training after the cancel"
    assert stack.wait_final(job_id)["status"] == "cancelled"
    deadline = time.monotonic() + 60  # the worker's own event follows rank 0's return
    while not any("cancelled at step" in m for m in stack.messages(job_id)):
        assert time.monotonic() < deadline, (stack.messages(job_id), stack.logs())
        time.sleep(0.5)


def test_warm_shutdown_checkpoints_both_ranks_and_hands_the_job_back(make_stack):
    stack = make_stack(lease_seconds=10, train_processes=2)
    first = stack.start_worker()
    job_id = stack.create_job(n_epochs=10, checkpoint_interval=100)  # 40 steps; no periodic checkpoint
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 4, what="step 4")
    ranks = wait_ranks(stack, job_id)
    first.terminate()  # warm shutdown
    first.proc.wait(60)
    assert gone(ranks.values())
    row = stack.row(job_id)
    assert row["status"] == "queued" and row["lease_owner"] is None, (row, first.log())
    stopped_at = row["steps_completed"]
    assert any(m.startswith(f"Worker shutting down; job requeued at step {stopped_at}") for m in stack.messages(job_id))
    stack.start_worker()
    stack.wait_final(job_id)
    assert_ran_cleanly(stack, job_id, 40)
    assert [e["data"]["step"] for e in stack.events(job_id) if e["kind"] == "resumed"] == [stopped_at]


def test_refuel_on_two_ranks(make_stack):
    stack = make_stack(train_processes=2)
    stack.start_worker()
    seeds = lambda n: jsonl([{"user_turns": [f"hello {i}", "and then?"]} for i in range(n)])  # noqa: E731
    train = upload(stack.client, seeds(6), filename="dialogues.jsonl").json()["id"]
    valid = upload(stack.client, seeds(2), filename="dialogues-eval.jsonl").json()["id"]
    hp = {"iterations": 2, "rollouts_per_iteration": 4, "num_turns": 2, "max_new_tokens": 6, "batch_size": 2,
          "user": {"type": "dataset"}, "reward": {"type": "function", "name": "length_penalty"}}
    response = stack.client.post("/v1/fine_tuning/jobs", json={
        "model": "tiny-random-llama", "training_file": train, "validation_file": valid, "seed": 1,
        "method": {"type": "refuel", "refuel": {"hyperparameters": hp}}})
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    job = stack.wait_final(job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert_ran_cleanly(stack, job_id, job["steps_completed"])  # every step reported once, by rank 0
    messages = stack.messages(job_id)
    assert not any("trains on one process" in m for m in messages), messages
    for t in (1, 2):
        assert sum(m.startswith(f"Iteration {t}/2: collected") for m in messages) == 1, messages
    assert sum(m.startswith("Win rate against the base") for m in messages) == 1
    assert [row["turn"] for row in job["result"]["evaluation"]["turns"]] == [1, 2]
