"""Real-process harness for the failure tests (tests/integration/test_failures*.py).

A `Stack` is one isolated deployment: its own database (on the session's Postgres, or on a
dedicated throwaway server for tests that restart it), its own queue (on the session's Redis, or
a dedicated one), its own artifacts dir, its own API server, and any number of Celery workers
started and killed by the test. Workers run in their own process group so a test can SIGKILL a
whole worker (main process and children) or just the child running a job (its pid is in the
job's lease owner).

    def test_x(make_stack):
        stack = make_stack(lease_seconds=5)
        w = stack.start_worker()
        job = stack.create_job(n_epochs=8)
        stack.wait_job(job, lambda j: j["steps_completed"] >= 6)
        os.kill(stack.running_pid(job), signal.SIGKILL)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests import infra
from tests.integration.helpers import jsonl, preference_line

DATASET = jsonl([preference_line(f"What is {i} plus {i}?", f"{2 * i}.", f"Maybe {2 * i + 1}, I am not sure.")
                 for i in range(8)])
FINAL = {"succeeded", "failed", "cancelled"}


class Worker:
    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name, self.env = name, env
        self.log_path = log_dir / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO",
             "--hostname", f"{self.name}@%h"],
            cwd=infra.REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_all(self) -> None:
        """SIGKILL the worker's whole process group: main process and the child running the job."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the main process only (what `docker stop` does): Celery's warm shutdown."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""


class Stack:
    def __init__(self, settings: dict, worker_settings: dict, log_dir: Path):
        self.settings, self.worker_settings, self.log_dir = settings, worker_settings, log_dir
        self.api = infra.ApiServer(log_dir, **settings).start()
        self.client = httpx.Client(base_url=self.api.url, timeout=30)
        self.workers: list[Worker] = []
        self._file_ids: dict[int, str] = {}

    # -- processes -------------------------------------------------------------------------------

    def start_worker(self, **overrides) -> Worker:
        env = infra.service_env(**{**self.settings, **self.worker_settings, **overrides})
        worker = Worker(f"w{len(self.workers)}-{self.settings['queue']}", env, self.log_dir).start()
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        workers = "\n".join(f"--- {w.name} ---\n{w.log()}" for w in self.workers)
        return f"{workers}\n--- api ---\n{self.api.log()[-2000:]}"

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=20)
        self.client.close()
        self.api.stop()

    # -- the API ---------------------------------------------------------------------------------

    def file_id(self, client: httpx.Client | None = None) -> str:
        """The 8-pair dataset, uploaded once per client (a client with an API key is a project)."""
        client = client or self.client
        if id(client) not in self._file_ids:
            response = client.post("/v1/files", files={"file": ("prefs.jsonl", DATASET, "application/jsonl")},
                                   data={"purpose": "fine-tune"})
            assert response.status_code == 200, response.text
            self._file_ids[id(client)] = response.json()["id"]
        return self._file_ids[id(client)]

    def create_job(self, n_epochs: int = 8, checkpoint_interval: int = 4, client: httpx.Client | None = None,
                   model: str = "tiny-random-llama", **hyperparameters) -> str:
        """8 examples, batch 2: 4 steps per epoch, so n_epochs * 4 steps of ~0.3 s each."""
        client = client or self.client
        body = {"model": model, "training_file": self.file_id(client), "seed": 7,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {
                    "n_epochs": n_epochs, "batch_size": 2, "learning_rate_multiplier": 10,
                    "checkpoint_interval": checkpoint_interval, **hyperparameters}}}}
        response = client.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/v1/fine_tuning/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str) -> list[dict]:
        data = self.client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        return list(reversed(data))  # oldest first

    def messages(self, job_id: str) -> list[str]:
        return [e["message"] for e in self.events(job_id) if e["type"] == "message"]

    def kinds(self, job_id: str) -> list[str]:
        return [e["kind"] for e in self.events(job_id)]

    def metric_steps(self, job_id: str, kind: str = "train") -> list[int]:
        data = self.client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
        return [m["step"] for m in data if m["kind"] == kind]

    def checkpoints(self, job_id: str) -> list[dict]:
        return self.client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100}).json()["data"]

    # -- the store -------------------------------------------------------------------------------

    def row(self, job_id: str) -> dict:
        from service.shared.store.models import JobRow
        from service.shared.store.session import session_scope

        with session_scope(self.settings["database_url"]) as s:
            job = s.scalar(select(JobRow).where(JobRow.id == job_id))
            return {c: getattr(job, c) for c in ("status", "attempts", "lease_owner", "lease_expires_at", "sent_at",
                                                 "steps_completed", "total_steps", "error", "started_at",
                                                 "finished_at")}

    def set_status(self, job_id: str, status: str) -> None:
        from sqlalchemy import update

        from service.shared.store.models import JobRow
        from service.shared.store.session import session_scope

        with session_scope(self.settings["database_url"]) as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(status=status))

    def send_again(self, job_id: str) -> None:
        """Send `worker.run_job(job_id)` once more, as a redelivery or a duplicate would."""
        from service.shared.queue import TASK_NAME, celery_client

        client = celery_client(self.settings["broker_url"], self.settings["queue"])
        client.send_task(TASK_NAME, args=[job_id], queue=self.settings["queue"])

    def running_pid(self, job_id: str) -> int:
        from worker.lease import owner_pid

        pid = owner_pid(self.row(job_id)["lease_owner"])
        assert pid, f"job {job_id} has no lease owner"
        return pid

    # -- waiting ---------------------------------------------------------------------------------

    def wait_row(self, job_id: str, check: Callable[[dict], bool], timeout: float = 180, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                row = self.row(job_id)
                if check(row):
                    return row
            time.sleep(0.2)
        raise AssertionError(f"job {job_id}: {what or 'condition'} not reached in {timeout:.0f}s; "
                             f"row={row}\n{self.logs()}")

    def wait_final(self, job_id: str, timeout: float = 300) -> dict:
        self.wait_row(job_id, lambda r: r["status"] in FINAL, timeout, "a final status")
        return self.job(job_id)


@pytest.fixture
def make_stack(request, make_database, redis_url, model_cache_dir, tmp_path) -> Iterator[Callable[..., Stack]]:
    """make_stack(postgres=None|PostgresServer, redis=None|RedisServer, shared={settings of the API and
    every worker}, **worker settings) -> Stack."""
    stacks: list[Stack] = []

    def make(postgres: infra.PostgresServer | None = None, redis: infra.RedisServer | None = None,
             lease_seconds: int = 5, max_attempts: int = 3, shared: dict | None = None, **worker_settings) -> Stack:
        database_url = infra.create_database(postgres.admin_url) if postgres else make_database()
        infra.run_migrations(database_url)
        n = len(stacks)
        settings = {"database_url": database_url, "broker_url": redis.url if redis else redis_url,
                    "artifacts_dir": str(tmp_path / f"artifacts-{n}"),
                    "queue": f"rlhf-fail-{uuid.uuid4().hex[:8]}",
                    "lease_seconds": lease_seconds, "max_attempts": max_attempts, **(shared or {})}
        log_dir = tmp_path / f"logs-{n}"
        log_dir.mkdir()
        stacks.append(Stack(settings, {"model_cache_dir": model_cache_dir, **worker_settings}, log_dir))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def own_redis() -> Iterator[infra.RedisServer]:
    server = infra.RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_postgres() -> Iterator[infra.PostgresServer]:
    if os.environ.get("RLHF_TEST_DATABASE_URL"):
        pytest.skip("RLHF_TEST_DATABASE_URL is set: these tests restart Postgres and never touch a given server")
    server = infra.PostgresServer().start()
    yield server
    server.stop()


def assert_ran_cleanly(stack: Stack, job_id: str, total: int) -> dict:
    """The checks every recovered job must pass: succeeded, every step once, one final adapter."""
    job = stack.job(job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["steps_completed"] == job["total_steps"] == total, job
    assert stack.metric_steps(job_id) == list(range(1, total + 1))
    metric_events = sorted(e["data"]["step"] for e in stack.events(job_id)
                           if e["type"] == "metrics" and e["data"].get("kind") == "train")
    assert metric_events == list(range(1, total + 1))
    assert sum("successfully completed" in m for m in stack.messages(job_id)) == 1
    root = Path(stack.settings["artifacts_dir"])
    adapters = list(root.glob(f"jobs/{job_id}/**/adapter_model.safetensors"))
    final = [p for p in adapters if p.parent.name == "adapter" and p.parent.parent.name == job_id]
    assert len(final) == 1, adapters
    response = stack.client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    return job
