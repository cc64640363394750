"""The per-project concurrent-job limit (RLHF_MAX_CONCURRENT_JOBS_PER_PROJECT, service/shared/quotas.py).

First the start itself, many workers racing on one project (the check and the start must be one
atomic step), then the behaviour a user sees with real workers: extra jobs of a project stay
`queued`, say why, and start once a slot frees; another project is not held back."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from service.shared.store.models import JobRow, new_id
from service.shared.store.session import session_scope
from tests import infra
from tests.integration.failure_helpers import make_stack  # noqa: F401
from tests.integration.tenants import make_tenant
from worker import lease

pytestmark = pytest.mark.integration


def add_jobs(db: str, project: str, statuses: list[str]) -> list[str]:
    rows = [JobRow(id=new_id("ftjob"), project_id=project, model="m", base_model="m", training_file="f",
                   status=status, method={}, seed=0) for status in statuses]
    with session_scope(db) as s:
        s.add_all(rows)
    return [row.id for row in rows]


@pytest.fixture(params=["postgres", "sqlite"])
def database(request, make_database, tmp_path) -> str:
    url = make_database() if request.param == "postgres" else f"sqlite:///{tmp_path}/quota.db"
    infra.run_migrations(url)
    return url


def test_racing_starts_never_exceed_the_limit(database):
    """Eight workers start eight queued jobs of one project at the same instant with a limit of 2:
    exactly two start. (Without the per-project lock, Postgres let more than two through.)"""
    project = f"p-{uuid.uuid4().hex[:8]}"
    add_jobs(database, "someone-else", ["running"] * 3)  # other projects' jobs never count
    queued = add_jobs(database, project, ["queued"] * 8)
    barrier = threading.Barrier(len(queued))

    def start(job_id: str) -> str:
        barrier.wait()
        return lease.acquire(database, job_id, f"worker-{job_id}", 60, max_running=2)

    with ThreadPoolExecutor(len(queued)) as pool:
        outcomes = list(pool.map(start, queued))
    assert sorted(outcomes) == [lease.ACQUIRED] * 2 + [lease.PROJECT_FULL] * 6
    with session_scope(database) as s:
        statuses = dict(s.execute(select(JobRow.id, JobRow.status).where(JobRow.project_id == project)).all())
    started = [job_id for job_id, outcome in zip(queued, outcomes) if outcome == lease.ACQUIRED]
    assert sorted(job_id for job_id, status in statuses.items() if status == "running") == sorted(started)


def test_acquire_outcomes(database):
    project = f"p-{uuid.uuid4().hex[:8]}"
    _running, queued, paused = add_jobs(database, project, ["running", "queued", "paused"])
    assert lease.acquire(database, queued, "w1", 60, max_running=1) == lease.PROJECT_FULL
    assert lease.acquire(database, paused, "w1", 60, max_running=1) == lease.TAKEN  # not queued: not ours to start
    assert lease.acquire(database, "ftjob-missing", "w1", 60, max_running=1) == lease.TAKEN
    with session_scope(database) as s:  # the queued job was left exactly as it was
        row = s.scalar(select(JobRow).where(JobRow.id == queued))
        assert (row.status, row.lease_owner, row.attempts) == ("queued", None, 0)
    assert lease.acquire(database, queued, "w1", 60, max_running=2) == lease.ACQUIRED
    assert lease.acquire(database, queued, "w2", 60, max_running=2) == lease.TAKEN  # already running
    more = add_jobs(database, project, ["queued"])[0]
    assert lease.acquire(database, more, "w3", 60, max_running=0) == lease.ACQUIRED  # 0: no limit


def test_extra_jobs_of_a_project_wait_queued_and_start_when_a_slot_frees(make_stack):
    stack = make_stack(lease_seconds=10, shared={"max_concurrent_jobs_per_project": 1, "quota_retry_seconds": 1})
    limited = make_tenant(stack.api).client(stack.api)
    other = make_tenant(stack.api).client(stack.api)
    stack.start_worker()
    stack.start_worker()  # two free workers: only the limit can keep the second job waiting

    first = stack.create_job(n_epochs=100, client=limited)  # 400 steps: cancelled below, not waited for
    stack.wait_row(first, lambda r: r["status"] == "running", what="the first job running")
    second = stack.create_job(n_epochs=1, client=limited)
    stack.wait_row(second, lambda r: any(m.startswith("Waiting: the project already runs its limit of 1")
                                         for m in _messages(limited, second)), 60, "the second job held")
    assert limited.get(f"/v1/fine_tuning/jobs/{second}").json()["status"] == "queued"
    # Another project's long job takes the free worker: it is not held back by this project's limit,
    # and the held job must not end up waiting behind it either.
    elsewhere = stack.create_job(n_epochs=100, client=other)  # 400 steps

    while stack.row(elsewhere)["status"] != "running":  # meanwhile the second must never be running
        # The second job first: had it started while the first still ran, the first reads `running`.
        second_row, first_row = stack.row(second), stack.row(first)
        assert first_row["status"] == "running", first_row
        assert second_row["status"] == "queued" and second_row["attempts"] == 0, (second_row, stack.logs())
        time.sleep(0.1)
    # The first job's end frees the project's slot: a cancel, now that the other project's job runs
    # beside it (a job left to end by itself may end before the other starts, as on a fast machine).
    assert limited.post(f"/v1/fine_tuning/jobs/{first}/cancel").json()["status"] == "cancelled"

    stack.wait_row(second, lambda r: r["status"] in ("succeeded", "failed", "cancelled"), what="a final status")
    assert limited.get(f"/v1/fine_tuning/jobs/{second}").json()["status"] == "succeeded", stack.logs()
    first_row, second_row, other_row = stack.row(first), stack.row(second), stack.row(elsewhere)
    assert second_row["started_at"] >= first_row["finished_at"] and second_row["attempts"] == 1
    # The other project's job ran beside the first one (the limit is per project), and is still
    # running: the second job started on the worker the first one freed, without waiting for it.
    assert other_row["started_at"] <= first_row["finished_at"] and other_row["status"] == "running", other_row
    waits = [m for m in _messages(limited, second) if m.startswith("Waiting:")]
    assert len(waits) == 1, waits  # said once, however many times it was retried
    assert other.post(f"/v1/fine_tuning/jobs/{elsewhere}/cancel").json()["status"] == "cancelled"


def _messages(client, job_id: str) -> list[str]:
    data = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
    return [e["message"] for e in data]
