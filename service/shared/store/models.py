"""Tables of record. Public ids are strings in the OpenAI style (file-..., ftjob-...); every table
also has an integer `seq` so lists paginate in a stable order."""

from __future__ import annotations

import secrets
import time
from typing import Literal

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def now() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    pass


class FileRow(Base):
    __tablename__ = "files"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True, default="default")
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    storage_key: Mapped[str] = mapped_column(String(256))  # path under RLHF_ARTIFACTS_DIR, never user text
    format: Mapped[str] = mapped_column(String(32))  # preference | chat | prompts | dialogues | csv (results)
    num_examples: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("project_id", "idempotency_key", name="uq_jobs_idempotency_key"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True, default="default")
    model: Mapped[str] = mapped_column(String(400))  # a registry name or a `ft:` name (below)
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    method: Mapped[dict] = mapped_column(JSON)  # rlhf_engine.spec.Method, fully resolved
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {code, message, param}
    fine_tuned_model: Mapped[str | None] = mapped_column(String(400), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # final metrics / evaluation
    steps_completed: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)

    # Worker coordination: a lease guards against two workers running one job at the same time.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(nullable=True)
    # When the job's message was last handed to the broker (None: never, or the send failed).
    sent_at: Mapped[float | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    # `Idempotency-Key` of the create request and a hash of its body (migration 0002): the same
    # key with the same body returns this job again; with another body it is refused.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Also write the base weights with the LoRA update folded in (migration 0004).
    export_merged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The Celery queue its messages go to (its model's registry queue, else the API's RLHF_QUEUE),
    # fixed at creation so every later send (resume, reaper, hand-back) reaches the same workers.
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)

    # What the weights start from (migration 0006). `model` is the name the user gave: a registry
    # model, or a `ft:` model or checkpoint of the same project (service/shared/model_names.py). Then
    # `base_model` is the registry model under it, `init_adapters` the storage keys of the adapters
    # merged into the base before training (oldest first) and `parent_job_id` the job that made it.
    base_model: Mapped[str] = mapped_column(String(200))
    init_adapters: Mapped[list | None] = mapped_column(JSON, nullable=True)
    parent_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # OpenAI's `integrations` as given ([{"type": "wandb", "wandb": {...}}]).
    integrations: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # File ids of the job's `fine-tune-results` files, written when it succeeds.
    result_files: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # Set by DELETE /v1/models/{name}: the adapter is gone and the model is no longer listed.
    model_deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_seq", "job_id", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16), default="message")  # message | metrics
    kind: Mapped[str] = mapped_column(String(32), default="message", server_default="message")  # events.EventKind
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class MetricRow(Base):
    """One row per (job, step): re-running a step after a crash overwrites instead of duplicating."""

    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "step", "kind", name="uq_job_metrics_step"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="train")  # train | eval
    values: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class CheckpointRow(Base):
    __tablename__ = "job_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step_number", name="uq_job_checkpoints_step"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON)
    storage_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class SampleRow(Base):
    """One reply of an evaluation's samples (rlhf_engine/samples.py): prompt `prompt_index` at
    `step`, step 0 being the base model's. A step's rows are replaced when it is replayed."""

    __tablename__ = "job_samples"
    __table_args__ = (UniqueConstraint("job_id", "step", "prompt_index", name="uq_job_samples_step"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    prompt_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[list] = mapped_column(JSON)  # [{role, content}]
    completion: Mapped[str] = mapped_column(Text)  # the first reply
    dialogue: Mapped[list | None] = mapped_column(JSON, nullable=True)  # the messages after the prompt (online)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ProjectRow(Base):
    """A tenant. Files and jobs carry its id; "default" is the project of an install without keys."""

    __tablename__ = "projects"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)


class ApiKeyRow(Base):
    """An API key, stored only as the sha256 of the secret (the secret is shown once, at creation)."""

    __tablename__ = "api_keys"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(String(64), ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, so an operator can tell keys apart
    created_at: Mapped[int] = mapped_column(BigInteger, default=now)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


DEFAULT_PROJECT = "default"

# Job statuses, as the OpenAI API names them, plus `paused` (an extension: stopped at a checkpoint
# by the user, resumed with POST .../resume).
VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "validating_files", "queued", "running", "succeeded", "failed", "cancelled")
PAUSED = "paused"
JobStatus = Literal[VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, PAUSED]
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (VALIDATING, QUEUED, RUNNING, PAUSED)  # a job in these states still needs its files
