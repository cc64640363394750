"""`worker.run_job(job_id)`: load a job from the store, run the engine, write the outcome back.

The message carries only the job id; the row is the truth. A redelivered or duplicate message is
harmless: a finished, cancelled or paused job is skipped, and a running one is protected by its
lease. How a run can end:

- succeeded / failed (the job's own error) / cancelled: a verdict, written only while the job is
  still `running` and still leased by this worker (a cancel that raced the last step wins);
- paused: the engine checkpoints at the next step, the lease is released, nothing else is written;
  the job resumes from that checkpoint when it is `queued` again with a new message;
- worker shutting down (SIGTERM, warm shutdown): the engine checkpoints at the next step, the job
  goes back to `queued` and a new message is sent, so another worker resumes it;
- lease lost (another worker took the job over): stop, write nothing;
- the database unreachable for longer than RLHF_DB_RETRY_SECONDS, or the process killed: no
  verdict; the reaper requeues the job from its last checkpoint (at most RLHF_MAX_ATTEMPTS times).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
import traceback
from pathlib import Path

from sqlalchemy import delete, select, update

from rlhf_engine import layout
from rlhf_engine.data.formats import DatasetError
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.run import JobInputError
from rlhf_engine.spec import Method, TrainConfig
from service.shared.artifacts import ArtifactStore, ArtifactStoreUnavailable
from service.shared.dbretry import StoreUnavailable, with_retry
from service.shared.events import add_event
from service.shared.logging import job_id_var
from service.shared.model_names import job_model_name
from service.shared.settings import get_settings
from service.shared.store import models
from service.shared.store.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    CheckpointRow,
    EventRow,
    FileRow,
    JobRow,
    MetricRow,
    new_id,
    now,
)
from service.shared.store.session import session_scope
from worker import lease, ranks, training
from worker.celery_app import app
from worker.openai_metrics import results_csv
from worker.reporter import write_event

log = logging.getLogger(__name__)

PAUSED = getattr(models, "PAUSED", "paused")


class MissingInput(Exception):
    """A file the job names is gone (deleted after the job was created)."""


class MissingStart(Exception):
    """The adapter a chained job starts from is gone (its model deleted after the job was created)."""


def _read_status(db: str, job_id: str) -> str | None:
    def read():
        with session_scope(db) as s:
            return s.scalar(select(JobRow.status).where(JobRow.id == job_id))

    return with_retry(read, "read the job's status")


def _hold_for_quota(db: str, job_id: str, limit: int) -> None:
    """The job's project is at its limit: the job stays `queued`, this message is acknowledged, and
    a reaper sends the job again in RLHF_QUOTA_RETRY_SECONDS: its last send is back-dated so that
    the lost-message check (worker/reaper.py) finds it due then. The first time, an event tells
    its owner why it waits.

    Not a delayed (ETA) message: Celery keeps one in the memory of the worker that fetched it and
    lets that worker take another job meanwhile, so the held job would wait behind that job
    however long it runs (celery/celery#6500), while other workers sit idle."""
    settings = get_settings()
    due = time.time() + settings.quota_retry_seconds - settings.resend_queued_seconds
    message = f"Waiting: the project already runs its limit of {limit} concurrent job(s)"

    def write():
        with session_scope(db) as s:
            s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == QUEUED).values(sent_at=due))
            if not s.scalar(select(EventRow.id).where(EventRow.job_id == job_id, EventRow.kind == "waiting").limit(1)):
                add_event(s, job_id, message, kind="waiting")

    with_retry(write, "note the quota wait")


@app.task(name="worker.run_job")
def run_job(job_id: str) -> None:
    token = job_id_var.set(job_id)  # every log line of this run carries the job's id
    try:
        _run_job(job_id)
    finally:
        job_id_var.reset(token)


def _run_job(job_id: str) -> None:
    settings = get_settings()
    db = settings.database_url
    status = _read_status(db, job_id)
    if status is None or status in TERMINAL or status == PAUSED:
        log.info("skipping job %s (status %s)", job_id, status)
        return
    if status not in (QUEUED, RUNNING):
        log.warning("job %s is %s, not queued; not starting it", job_id, status)
        return
    owner = lease.owner_id()
    limit = settings.max_concurrent_jobs_per_project
    outcome = with_retry(lambda: lease.acquire(db, job_id, owner, settings.lease_seconds, max_running=limit),
                         "take the job's lease")
    if outcome == lease.PROJECT_FULL:
        log.info("job %s: its project runs %s job(s), its limit; retrying in %ss", job_id, limit,
                 settings.quota_retry_seconds)
        _hold_for_quota(db, job_id, limit)
        return
    if outcome != lease.ACQUIRED:
        log.warning("job %s is leased by another worker (or no longer queued); not starting it twice", job_id)
        return
    heartbeat = lease.Heartbeat(db, job_id, owner, settings.lease_seconds)
    heartbeat.start()
    try:
        _execute(job_id, owner, heartbeat)
    except StoreUnavailable:
        # No verdict can be written; the lease lapses and the reaper requeues the job from its
        # last checkpoint once the database is back.
        log.exception("job %s: database unavailable; leaving it to be resumed", job_id)
        heartbeat.stop()
        return
    except BaseException:  # killed mid-run (SystemExit from a signal), or a bug in this module
        # No verdict: release the lease so the reaper counts this as a lost worker at its next
        # pass and requeues the job (bounded by RLHF_MAX_ATTEMPTS, so a bug cannot loop forever).
        log.exception("job %s: run ended abnormally", job_id)
        heartbeat.stop()
        try:
            lease.release(db, job_id, owner)
        except Exception:
            pass  # the lease lapses instead
        raise
    heartbeat.stop()
    try:
        with_retry(lambda: lease.release(db, job_id, owner), "release the lease")
    except StoreUnavailable:
        log.warning("job %s: could not release its lease; it will lapse", job_id)
        return
    if settings.artifacts_clean_local:
        try:
            _drop_local_copy(db, job_id)
        except Exception as err:  # housekeeping: never a reason to fail a job that has ended
            log.warning("job %s: could not remove its local working copy: %s", job_id, err)


def _drop_local_copy(db: str, job_id: str) -> None:
    """RLHF_ARTIFACTS_CLEAN_LOCAL: once a job has ended, the bucket holds all it made, so this
    machine's working copy (checkpoints, adapter, merged weights) goes. Not while it may resume
    (paused, handed back): then the copy saves a download."""
    store = ArtifactStore.from_settings(get_settings())
    if store.remote is None:
        return  # the local directory is the only copy
    if _read_status(db, job_id) in TERMINAL:
        shutil.rmtree(store.path(store.job_key(job_id)), ignore_errors=True)
        log.info("job %s ended; removed its local working copy (the bucket keeps it)", job_id)


def _hand_back_or_leave(db: str, job: JobRow, owner: str, message: str) -> None:
    """Best effort: requeue the job now; if even that fails, its lease lapses and the reaper does."""
    from service.shared.queue import enqueue_job

    job_id = job.id
    try:
        if lease.hand_back(db, job_id, owner, message):
            enqueue_job(job_id, job.queue)
    except Exception as err:
        log.warning("job %s: could not hand it back (%s); the reaper will", job_id, err)


def _latest_checkpoint(db: str, store: ArtifactStore, job_id: str) -> tuple[int, Path] | None:
    def read():
        with session_scope(db) as s:
            return s.execute(select(CheckpointRow.step_number, CheckpointRow.storage_key)
                             .where(CheckpointRow.job_id == job_id)
                             .order_by(CheckpointRow.step_number.desc())).all()

    # A row is written once the checkpoint is complete locally (and in the bucket, if there is one);
    # another machine fetches it first. A bucket that cannot be reached raises: no verdict, the
    # reaper requeues the job, rather than restarting it from scratch over its checkpoints.
    for step, key in with_retry(read, "list checkpoints"):
        path = store.local_dir(key)
        if (path / layout.STATE).exists():
            return step, path
    return None


def _finish(db: str, job_id: str, owner: str, event: tuple[str, str, dict | None], rows: tuple = (),
            **values) -> bool:
    """Final status write, its event and `rows` in one transaction, only if the job is still ours
    and still running (a cancel wins)."""
    message, level, data = event

    def write():
        with session_scope(db) as s:
            result = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == RUNNING,
                                                    JobRow.lease_owner == owner)
                               .values(finished_at=now(), lease_owner=None, lease_expires_at=None, **values))
            if result.rowcount == 1:
                add_event(s, job_id, message, kind="status", level=level, data=data)
                s.add_all(rows)
            return result.rowcount == 1

    return with_retry(write, "record the job's outcome")


def _prepare_resume(db: str, job_id: str, step: int, attempt: int) -> None:
    """Steps after the checkpoint will be replayed: drop their metrics (and metric events) and rewind
    the progress counter, with the resume event, in one transaction."""

    def write():
        with session_scope(db) as s:
            s.execute(delete(MetricRow).where(MetricRow.job_id == job_id, MetricRow.step > step))
            s.execute(delete(EventRow).where(EventRow.job_id == job_id, EventRow.type == "metrics",
                                             EventRow.data["step"].as_integer() > step))
            s.execute(update(JobRow).where(JobRow.id == job_id).values(steps_completed=step))
            add_event(s, job_id, f"Resuming from checkpoint at step {step} (attempt {attempt})", kind="resumed",
                      data={"step": step, "attempt": attempt})

    with_retry(write, "prepare the resume")


def _execute(job_id: str, owner: str, heartbeat: lease.Heartbeat) -> None:
    settings = get_settings()
    db = settings.database_url
    store = ArtifactStore.from_settings(settings)

    def load():
        with session_scope(db) as s:
            job = s.scalar(select(JobRow).where(JobRow.id == job_id))
            files = {f.id: f for f in s.scalars(select(FileRow).where(
                FileRow.id.in_([job.training_file, job.validation_file or ""])))}
            return job, files

    job, files = with_retry(load, "load the job")

    resume = _latest_checkpoint(db, store, job_id)
    if resume:
        step, resume_path = resume
        _prepare_resume(db, job_id, step, job.attempts)
    else:
        resume_path = None
        with_retry(lambda: _prepare_resume_from_scratch(db, job_id, job.attempts), "start the job")

    try:
        inputs = {}
        for file_id in filter(None, [job.training_file, job.validation_file]):
            if file_id not in files:
                raise MissingInput(f"file {file_id!r} no longer exists")
            inputs[file_id] = store.local_file(files[file_id].storage_key)  # fetched from the bucket if need be
            if not inputs[file_id].exists():
                raise MissingInput(f"the bytes of file {file_id!r} are missing from the artifact store")
        config = TrainConfig(
            model=job.base_model, init_adapters=[str(_adapter_dir(store, key)) for key in job.init_adapters or []],
            training_file=str(inputs[job.training_file]),
            validation_file=str(inputs[job.validation_file]) if job.validation_file else None,
            seed=job.seed, method=Method.model_validate(job.method),
            output_dir=str(store.path(store.job_key(job_id))),
        )
        processes = training.processes(db, job, settings)
        if processes == 1:
            result, stop_reason = training.train(db, store, job, owner, config, resume_path, heartbeat)
        else:  # the same, on rank 0 of `processes` (worker/ranks.py)
            result, stop_reason = ranks.launch(processes, "worker.training:train_rank",
                                               (job_id, owner, config.model_dump(), resume_path))
    except StoreUnavailable:
        raise
    except (JobInputError, DatasetError, MissingInput) as err:
        _fail(db, job_id, owner, "invalid_training_file", str(err))
        return
    except MissingStart as err:
        _fail(db, job_id, owner, "model_not_available", str(err))
        return
    except ArtifactStoreUnavailable as err:
        _fail(db, job_id, owner, "artifact_store_unavailable", str(err))
        return
    except Exception as err:  # the job's error, not the worker's: record it and free the worker
        log.exception("job %s failed", job_id)
        _fail(db, job_id, owner, "training_error", f"{type(err).__name__}: {err}",
              detail=traceback.format_exc(limit=8))
        return

    if result.stopped:
        reason = stop_reason
        if reason == CANCELLED:
            write_event(db, job_id, f"Job cancelled at step {result.steps}; worker released", kind="status")
        elif reason == PAUSED:
            write_event(db, job_id, f"Job paused at step {result.steps}; checkpoint kept, worker released",
                        kind="status")
        elif reason == "shutdown":
            _hand_back_or_leave(db, job, owner, f"Worker shutting down; job requeued at step {result.steps} "
                                                   "to resume from its checkpoint")
        elif reason == "lease_lost":
            log.warning("job %s: lease lost, another worker owns it now", job_id)
        else:
            log.warning("job %s stopped (status %s)", job_id, reason)
        return
    full = config.method.hyperparameters.full  # every weight trained: its output is the whole model, no adapter
    output = "model" if full else "adapter"
    try:  # the job succeeds only once its output is where the API (maybe on another machine) reads it
        store.publish_dir(store.merged_key(job_id) if full else store.adapter_key(job_id))
    except ArtifactStoreUnavailable as err:
        _fail(db, job_id, owner, "artifact_store_unavailable", f"the {output} could not be stored: {err}")
        return
    if job.export_merged and not full and not _export_merged(db, store, job, owner, settings):
        return
    try:
        results = _results_file(db, store, job)
    except ArtifactStoreUnavailable as err:
        _fail(db, job_id, owner, "artifact_store_unavailable", f"the results file could not be stored: {err}")
        return
    if not _finish(db, job_id, owner, ("The job has successfully completed", "info",
                                       {"steps": result.steps, "trained_tokens": result.trained_tokens}),
                   rows=(results,), status=SUCCEEDED, fine_tuned_model=job_model_name(job),
                   result_files=[results.id], trained_tokens=result.trained_tokens, result=result.summary):
        store.delete_file(results.storage_key)  # cancelled meanwhile: no job points at it


def _adapter_dir(store: ArtifactStore, key: str) -> Path:
    """A stored adapter a chained job starts from: a job's final adapter, or a checkpoint (whose
    adapter is its `adapter/`), fetched from the bucket if this machine has no copy."""
    path = store.local_dir(key)
    if not path.is_dir():
        raise MissingStart(f"the adapter the job starts from ({key}) is missing from the artifact store")
    return path if (path / layout.ADAPTER_CONFIG).exists() else path / layout.ADAPTER


def _results_file(db: str, store: ArtifactStore, job: JobRow) -> FileRow:
    """The job's `fine-tune-results` file (OpenAI's CSV, one row per step), stored; its row is
    written with the job's final status."""
    with session_scope(db) as s:
        metrics = s.execute(select(MetricRow.step, MetricRow.values).where(MetricRow.job_id == job.id)
                            .order_by(MetricRow.step, MetricRow.kind)).all()
    by_step: dict[int, dict] = {}
    for step, values in metrics:
        by_step.setdefault(step, {}).update(values)
    data = results_csv(sorted(by_step.items()))
    file_id = new_id("file")
    key = store.save_file(file_id, data)
    return FileRow(id=file_id, project_id=job.project_id, filename="step_metrics.csv", purpose="fine-tune-results",
                   bytes=len(data), storage_key=key, format="csv", num_examples=len(by_step),
                   sha256=hashlib.sha256(data).hexdigest())


def _export_merged(db: str, store: ArtifactStore, job: JobRow, owner: str, settings) -> bool:
    """The base weights with the final adapter folded in, as the job asked; False if the job failed."""
    from rlhf_engine.export import merge_adapter_dir
    from rlhf_engine.models import loading

    write_event(db, job.id, "Merging the adapter into the base weights")
    try:
        base_dir = loading.materialise(ModelRegistry.load(settings.model_registry).get(job.base_model),
                                       settings.model_cache_dir)
        merge_adapter_dir(base_dir, store.path(store.adapter_key(job.id)), store.path(store.merged_key(job.id)))
        store.publish_dir(store.merged_key(job.id))
    except ArtifactStoreUnavailable as err:
        _fail(db, job.id, owner, "artifact_store_unavailable", f"the merged weights could not be stored: {err}")
        return False
    except Exception as err:
        log.exception("job %s: merging failed", job.id)
        _fail(db, job.id, owner, "export_error", f"merging the adapter into the base weights failed: "
                                                 f"{type(err).__name__}: {err}")
        return False
    return True


def _prepare_resume_from_scratch(db: str, job_id: str, attempt: int) -> None:
    """No checkpoint: any metrics of an earlier attempt will be replayed from step 1."""
    with session_scope(db) as s:
        s.execute(delete(MetricRow).where(MetricRow.job_id == job_id))
        s.execute(delete(EventRow).where(EventRow.job_id == job_id, EventRow.type == "metrics"))
        s.execute(update(JobRow).where(JobRow.id == job_id).values(steps_completed=0))
        add_event(s, job_id, "Fine-tuning job started" if attempt <= 1 else
                  f"Fine-tuning job restarted from the beginning (attempt {attempt})", kind="status",
                  data={"attempt": attempt})


def _fail(db: str, job_id: str, owner: str, code: str, message: str, detail: str | None = None) -> None:
    _finish(db, job_id, owner, (f"Job failed: {message[:500]}", "error",
                                {"code": code, **({"traceback": detail} if detail else {})}),
            status=FAILED, error={"code": code, "message": message[:4000], "param": None})
