"""Queues per GPU type: the operator's registry routes a model's jobs to the workers started with
that model's queue (RLHF_QUEUE); other workers never take them."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.integration.failure_helpers import make_stack  # noqa: F401

pytestmark = pytest.mark.integration


def queue_depth(stack, queue: str) -> int | None:
    found = re.search(rf'^rlhf_queue_depth{{queue="{re.escape(queue)}"}} (\d+)', stack.client.get("/metrics").text,
                      re.MULTILINE)
    return int(found.group(1)) if found else None


def job_ids_logged(worker) -> set[str]:
    lines = [json.loads(line) for line in worker.log(tail=10**6).splitlines() if line.startswith("{")]
    return {line["job_id"] for line in lines if line.get("job_id")}


def test_a_models_jobs_go_to_its_queue(make_stack, tmp_path):
    big_gpu = f"rlhf-big-gpu-{uuid.uuid4().hex[:8]}"
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": {"tiny-on-big-gpu": {"source": "builtin-tiny", "queue": big_gpu}}}))
    stack = make_stack(shared={"model_registry": str(registry)})
    default_worker = stack.start_worker()  # consumes the stack's default queue only

    routed = stack.create_job(n_epochs=1, model="tiny-on-big-gpu")
    plain = stack.create_job(n_epochs=1)
    assert stack.wait_final(plain)["status"] == "succeeded", stack.logs()
    row = stack.row(routed)
    assert row["status"] == "queued" and row["attempts"] == 0, row  # the default worker never took it
    assert queue_depth(stack, big_gpu) == 1  # waiting where its workers will look, and visible there

    big_worker = stack.start_worker(queue=big_gpu)
    assert stack.wait_final(routed)["status"] == "succeeded", stack.logs()
    assert routed in job_ids_logged(big_worker) and routed not in job_ids_logged(default_worker)
    assert plain in job_ids_logged(default_worker)
    assert queue_depth(stack, big_gpu) == 0


def test_the_reaper_resends_to_the_jobs_own_queue(make_database):
    """A job whose worker died, and a queued job whose message was lost, are sent again to the
    queue they were routed to, not to the reaping worker's own."""
    import time

    from service.shared.settings import Settings
    from service.shared.store.models import JobRow, new_id
    from service.shared.store.session import session_scope
    from tests import infra
    from worker.reaper import reap_once, resend_lost_queued

    db = make_database()
    infra.run_migrations(db)
    lost, unsent = new_id("ftjob"), new_id("ftjob")
    with session_scope(db) as s:
        s.add_all([JobRow(id=lost, model="m", base_model="m", training_file="f", method={}, seed=0, status="running",
                          lease_owner="dead:1:1", lease_expires_at=time.time() - 1, queue="rlhf-big-gpu"),
                   JobRow(id=unsent, model="m", base_model="m", training_file="f", method={}, seed=0, status="queued",
                          created_at=int(time.time()) - 3600, queue="rlhf-small-gpu")])
    sent: list[tuple[str, str | None]] = []
    settings = Settings(database_url=db, queue="rlhf-default")
    reap_once(settings, lambda job_id, queue: sent.append((job_id, queue)))
    resend_lost_queued(settings, lambda job_id, queue: sent.append((job_id, queue)))
    assert sorted(sent) == sorted([(lost, "rlhf-big-gpu"), (unsent, "rlhf-small-gpu")])
