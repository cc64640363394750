"""`worker.run_job(job_id)`: load a job from the store, run the engine, write the outcome back.

The message carries only the job id; the row is the truth. A redelivered or duplicate message is
harmless: a finished job is skipped, and a running one is protected by its lease.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from sqlalchemy import delete, select, update

from rlhf_engine.data.formats import DatasetError
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.spec import Method, TrainConfig
from service.artifacts import ArtifactStore
from service.settings import get_settings
from service.store.models import (CANCELLED, FAILED, RUNNING, SUCCEEDED, TERMINAL, CheckpointRow, FileRow, JobRow,
                                  MetricRow, now)
from service.store.session import session_scope
from worker import lease
from worker.celery_app import app
from worker.reporter import DbReporter, add_event

log = logging.getLogger(__name__)


def fine_tuned_model_name(job: JobRow) -> str:
    return f"ft:{job.model}:{job.suffix or 'local'}:{job.id}"


@app.task(name="worker.run_job")
def run_job(job_id: str) -> None:
    settings = get_settings()
    db = settings.database_url
    with session_scope(db) as s:
        status = s.scalar(select(JobRow.status).where(JobRow.id == job_id))
    if status is None or status in TERMINAL:
        log.info("skipping job %s (status %s)", job_id, status)
        return
    owner = lease.owner_id()
    if not lease.acquire(db, job_id, owner, settings.lease_seconds):
        log.warning("job %s is leased by another worker; not starting it twice", job_id)
        return
    heartbeat = lease.Heartbeat(db, job_id, owner, settings.lease_seconds)
    heartbeat.start()
    try:
        _execute(job_id, owner, heartbeat)
    finally:
        heartbeat.stop()
        lease.release(db, job_id, owner)


def _latest_checkpoint(db: str, store: ArtifactStore, job_id: str) -> tuple[int, Path] | None:
    with session_scope(db) as s:
        rows = s.execute(select(CheckpointRow.step_number, CheckpointRow.storage_key)
                         .where(CheckpointRow.job_id == job_id).order_by(CheckpointRow.step_number.desc())).all()
    for step, key in rows:
        path = store.path(key)
        if (path / "state.pt").exists():
            return step, path
    return None


def _finish(db: str, job_id: str, owner: str, **values) -> bool:
    """Final status write, only if the job is still ours and still running (a cancel wins)."""
    with session_scope(db) as s:
        result = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING,
                                                JobRow.lease_owner == owner)
                           .values(finished_at=now(), **values))
        return result.rowcount == 1


def _execute(job_id: str, owner: str, heartbeat: lease.Heartbeat) -> None:
    from rlhf_engine.run import JobInputError, run

    settings = get_settings()
    db = settings.database_url
    store = ArtifactStore(settings.artifacts_dir)
    with session_scope(db) as s:
        job = s.scalar(select(JobRow).where(JobRow.id == job_id))
        files = {f.id: f for f in s.scalars(select(FileRow).where(
            FileRow.id.in_([job.training_file, job.validation_file or ""])))}

    resume = _latest_checkpoint(db, store, job_id)
    if resume:
        step, resume_path = resume
        with session_scope(db) as s:  # steps after the checkpoint will be replayed and rewritten
            s.execute(delete(MetricRow).where(MetricRow.job_id == job_id, MetricRow.step > step))
        add_event(db, job_id, f"Resuming from checkpoint at step {step} (attempt {job.attempts})")
    else:
        resume_path = None
        add_event(db, job_id, "Fine-tuning job started")

    reporter = DbReporter(db, job_id, store, fine_tuned_model_name(job), heartbeat=heartbeat)
    try:
        config = TrainConfig(
            model=job.model,
            training_file=str(store.path(files[job.training_file].storage_key)),
            validation_file=str(store.path(files[job.validation_file].storage_key)) if job.validation_file else None,
            seed=job.seed, method=Method.model_validate(job.method),
            output_dir=str(store.path(store.job_key(job_id))),
        )
        result = run(config, reporter, registry=ModelRegistry.load(settings.model_registry),
                     cache_dir=settings.model_cache_dir, resume_from=resume_path)
    except (JobInputError, DatasetError, KeyError) as err:
        _fail(db, job_id, owner, "invalid_training_file", str(err))
        return
    except Exception as err:  # the job's error, not the worker's: record it and free the worker
        log.exception("job %s failed", job_id)
        _fail(db, job_id, owner, "training_error", f"{type(err).__name__}: {err}",
              detail=traceback.format_exc(limit=8))
        return

    if result.stopped:
        if reporter.stop_reason == CANCELLED:
            add_event(db, job_id, f"Job cancelled at step {result.steps}; worker released")
        elif reporter.stop_reason == "lease_lost":
            log.warning("job %s: lease lost, another worker owns it now", job_id)
        return
    done = _finish(db, job_id, owner, status=SUCCEEDED, fine_tuned_model=fine_tuned_model_name(job),
                   trained_tokens=result.trained_tokens, result=result.summary)
    if done:
        add_event(db, job_id, "The job has successfully completed",
                  data={"steps": result.steps, "trained_tokens": result.trained_tokens})


def _fail(db: str, job_id: str, owner: str, code: str, message: str, detail: str | None = None) -> None:
    if _finish(db, job_id, owner, status=FAILED, error={"code": code, "message": message[:4000], "param": None}):
        add_event(db, job_id, f"Job failed: {message[:500]}", level="error",
                  data={"code": code, **({"traceback": detail} if detail else {})})
