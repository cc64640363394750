"""The engine's run for one job: its reporter, and the run itself, on this process or as one of
the N ranks the worker launches (worker/ranks.py; RLHF_TRAIN_PROCESSES).

    processes   how many ranks the job gets: the worker's offer, or fewer where it asks
    train       rlhf_engine.run.run with the job's reporter (DbReporter, TensorBoard, trackers), its
                registry, model cache, resume point and reward-job resolver
    train_rank  the entry torchrun starts on each rank: rank 0 reports, the others are never heard
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.outcome import JobInputError
from rlhf_engine.spec import DATA_PARALLEL_METHODS, Method, TrainConfig
from rlhf_engine.tracking.reporter import TensorBoardReporter
from rlhf_engine.tracking.trackers import Tracker, trackers_from_env, wandb_tracker
from service.shared.artifacts import ArtifactStore
from service.shared.settings import get_settings
from service.shared.store.models import SUCCEEDED, JobRow
from service.shared.store.session import session_scope
from worker.reporter import DbReporter, write_event


def processes(db: str, job: JobRow, settings) -> int:
    """Ranks for this job: RLHF_TRAIN_PROCESSES, or fewer where the job's `train_processes`
    asks for fewer. A job asking for more runs on what this worker offers, with an event: its
    results do not depend on the number of ranks (rlhf_engine/distributed.py)."""
    offered = settings.train_processes
    method = Method.model_validate(job.method)
    if offered > 1 and method.type not in DATA_PARALLEL_METHODS:
        write_event(db, job.id, f"{method.type} trains on one process (several: {', '.join(DATA_PARALLEL_METHODS)})")
        return 1
    asked = method.hyperparameters.train_processes
    if asked == "auto":
        return offered
    if asked > offered:
        write_event(db, job.id, f"The job asks for {asked} training processes; this worker runs {offered}")
    return min(asked, offered)


def _reporter(db: str, store: ArtifactStore, job: JobRow, owner: str, heartbeat=None):
    """Every job also gets TensorBoard event files (and W&B / MLflow when configured) beside its artifacts."""
    return TensorBoardReporter(
        DbReporter(db, job.id, store, heartbeat=heartbeat, owner=owner),
        logdir=store.path(store.job_key(job.id)) / "tensorboard",
        trackers=trackers_from_env(run_name=job.id, config=job.method) + _integrations(db, job))


def train(db: str, store: ArtifactStore, job: JobRow, owner: str, config: TrainConfig, resume_path, heartbeat=None,
          reporter=None):
    """(RunResult, the reporter's stop reason): the engine on this process with the job's reporter."""
    from rlhf_engine.run import run

    settings = get_settings()
    reporter = reporter or _reporter(db, store, job, owner, heartbeat)
    try:
        result = run(config, reporter, registry=ModelRegistry.load(settings.model_registry),
                     cache_dir=settings.model_cache_dir, resume_from=resume_path,
                     resolve_reward_job=lambda name: reward_job_dir(db, store, job.project_id, name))
    finally:
        reporter.close()
    return result, reporter.stop_reason


class _Unheard:
    """The reporter of ranks other than 0: MainOnly never forwards to it (rlhf_engine/distributed.py)."""

    stop_reason = None

    def close(self) -> None:
        pass


def train_rank(job_id: str, owner: str, config: dict, resume_path):
    """One rank of a job on several processes, started by the elastic launcher: rank 0 reports
    through the job's DbReporter (polling cancel and pause, which it broadcasts to the others),
    the others through a reporter that is never heard (rlhf_engine/distributed.MainOnly)."""
    settings = get_settings()
    db, store = settings.database_url, ArtifactStore.from_settings(settings)
    with session_scope(db) as s:
        job = s.scalar(select(JobRow).where(JobRow.id == job_id))
        s.expunge(job)
    main = os.environ.get("RANK") == "0"
    result = train(db, store, job, owner, TrainConfig.model_validate(config), resume_path,
                   reporter=None if main else _Unheard())
    return result if main else None


def _integrations(db: str, job: JobRow) -> list[Tracker]:
    """The job's W&B integration, if the worker can honour it; if not, a `warn` event says why and
    the job trains on without it."""
    trackers = []
    for integration in job.integrations or []:
        tracker, problem = wandb_tracker(integration["wandb"], run_name=job.id, config=job.method)
        if tracker is not None:
            trackers.append(tracker)
            write_event(db, job.id, f"Forwarding metrics to W&B project {integration['wandb']['project']!r}")
        else:
            write_event(db, job.id, f"W&B integration not used: {problem}", level="warn")
    return trackers


def reward_job_dir(db: str, store: ArtifactStore, project_id: str, job_id: str) -> Path:
    """A finished `reward_model` job of the same project, as the engine's reward source `job`."""
    with session_scope(db) as s:
        row = s.scalar(select(JobRow).where(JobRow.id == job_id, JobRow.project_id == project_id))
    if row is None or row.method.get("type") != "reward_model":
        raise JobInputError(f"reward job {job_id!r} is not a reward_model job of this project")
    if row.status != SUCCEEDED:
        raise JobInputError(f"reward job {job_id!r} has not succeeded (status {row.status})")
    store.local_dir(store.adapter_key(job_id))  # trained on another machine: fetch its adapter
    return store.path(store.job_key(job_id))
