"""The API's objects, in the shapes of OpenAI's files and fine-tuning API.

Responses are built from store rows by the `from_row` constructors, so the mapping from the
database to the wire lives in one place. Fields OpenAI does not have are marked as extensions.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlhf_engine.callbacks import EventLevel
from rlhf_engine.spec import Method, SupervisedHyperparameters
from service.shared import model_names
from service.shared.events import EventKind, EventType
from service.shared.store.models import RUNNING, CheckpointRow, EventRow, FileRow, JobRow, JobStatus, SampleRow, now

T = TypeVar("T")

ORGANIZATION_ID = "org-local"  # one organisation per install; tenants are its projects


class Response(BaseModel):
    """A response object. Every field is always sent, so every field is required in our OpenAPI
    (a default only fills it in), as in OpenAI's: strict clients and schemathesis rely on that."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ListObject(Response, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, data: list, has_more: bool) -> "ListObject":
        # first/last ids make the next cursor obvious (OpenAI returns them for some lists).
        first = getattr(data[0], "id", None) if data else None
        last = getattr(data[-1], "id", None) if data else None
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)


class Deleted(Response):
    id: str
    object: Literal["file", "model"]
    deleted: bool = True


# ---- files ---------------------------------------------------------------------------------------

FilePurpose = Literal["fine-tune", "fine-tune-results"]  # uploads; what a finished job writes


class FileObject(Response):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"  # validation happens at upload; stored means usable
    status_details: str | None = None
    # Extensions: what the upload validation found.
    format: str
    num_examples: int

    @classmethod
    def from_row(cls, row: FileRow) -> "FileObject":
        return cls(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                   purpose=row.purpose, format=row.format, num_examples=row.num_examples)


# ---- jobs: request -------------------------------------------------------------------------------

_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class WandbIntegration(BaseModel):
    """OpenAI's W&B settings; the run is named after the job unless `name` is given."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128)
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(None, max_length=50)


class Integration(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    type: Literal["wandb"]
    wandb: WandbIntegration


class JobCreate(BaseModel):
    """`POST /v1/fine_tuning/jobs`. Unknown fields are refused so that typos never go unnoticed."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1, max_length=400)  # a registry model, or this project's `ft:` name
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    # OpenAI's deprecated top-level form: supervised hyperparameters when `method` is absent.
    hyperparameters: SupervisedHyperparameters | None = None
    # OpenAI's integrations; W&B is the one there is (the worker forwards metrics to it).
    integrations: list[Integration] | None = Field(None, max_length=5)
    # Extension: also produce the base model with the LoRA update merged in (a plain transformers
    # directory, GET .../merged_model), for serving stacks that take no adapters.
    export_merged: bool = False

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v is not None and not _SUFFIX.match(v):
            raise ValueError("suffix must be 1-64 characters of letters, digits, '-' and '_'")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v):
        # OpenAI's limits: at most 16 pairs, keys up to 64 characters, values up to 512.
        if v is not None:
            if len(v) > 16:
                raise ValueError("metadata holds at most 16 key-value pairs")
            if any(not 1 <= len(k) <= 64 or len(val) > 512 for k, val in v.items()):
                raise ValueError("metadata keys must be 1-64 characters and values at most 512")
        return v



# ---- jobs: responses -----------------------------------------------------------------------------

class JobError(Response):
    code: str
    message: str
    param: str | None = None


class Hyperparameters(Response):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class FineTuningJob(Response):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str = ORGANIZATION_ID
    result_files: list[str] = []
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[Integration] = []
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    estimated_finish: int | None = None
    # Extensions.
    suffix: str | None = None
    steps_completed: int = 0
    total_steps: int | None = None
    result: dict[str, Any] | None = None
    export_merged: bool = False

    @classmethod
    def from_row(cls, row: JobRow) -> "FineTuningJob":
        method = Method.model_validate(row.method)
        hp = method.hyperparameters
        return cls(
            id=row.id, created_at=row.created_at, error=JobError(**row.error) if row.error else None,
            fine_tuned_model=row.fine_tuned_model, finished_at=row.finished_at,
            # The values the engine will use, "auto" resolved (rlhf_engine.spec owns the defaults).
            hyperparameters=Hyperparameters(n_epochs=hp.epochs, batch_size=hp.examples_per_step,
                                            learning_rate_multiplier=hp.lr_multiplier),
            model=row.model, seed=row.seed, status=row.status, trained_tokens=row.trained_tokens,
            result_files=row.result_files or [], integrations=row.integrations or [],
            training_file=row.training_file, validation_file=row.validation_file,
            metadata=row.metadata_, method=method.public_dict(), suffix=row.suffix,
            steps_completed=row.steps_completed or 0, total_steps=row.total_steps, result=row.result,
            export_merged=bool(row.export_merged),
            estimated_finish=estimate_finish(row.status, row.started_at, row.steps_completed or 0,
                                             row.total_steps, now()))


def estimate_finish(status: str, started_at: int | None, steps: int, total: int | None, at: int) -> int | None:
    """When a running job should end, from its average step rate so far (Unix seconds).

    The average since the first start includes model loading and any pause, so early estimates
    run late; that errs on the side a user can plan with.
    """
    if status != RUNNING or not started_at or not total or steps <= 0 or at <= started_at:
        return None
    seconds_per_step = (at - started_at) / steps
    return int(at + max(0, total - steps) * seconds_per_step)


class Event(Response):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: EventLevel
    message: str
    type: EventType = "message"
    data: Any = None
    kind: EventKind = Field("message", description="What the event records, as data (ours; OpenAI's clients "
                            "ignore it): read it instead of the message text, which is for people.")

    @classmethod
    def from_row(cls, row: EventRow) -> "Event":
        return cls(id=row.id, created_at=row.created_at, level=row.level, message=row.message,
                   type=row.type, data=row.data, kind=row.kind)


class Checkpoint(Response):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def from_row(cls, row: CheckpointRow, job: JobRow) -> "Checkpoint":
        name = model_names.checkpoint_model(model_names.job_model_name(job), row.step_number)
        return cls(id=row.id, created_at=row.created_at, fine_tuned_model_checkpoint=name,
                   fine_tuning_job_id=row.job_id, metrics={**(row.metrics or {}), "step": row.step_number},
                   step_number=row.step_number)


class MetricPoint(Response):
    """Extension: one step's logged values (`loss`, `rewards/margins`, ...)."""

    object: Literal["fine_tuning.job.metric"] = "fine_tuning.job.metric"
    step: int
    kind: str
    values: dict[str, Any]
    created_at: int


class SampleMessage(Response):
    role: Literal["system", "user", "assistant"]
    content: str


class Sample(Response):
    """Extension: the job's greedy reply to held-out prompt `index` at an evaluation `step`; step 0
    is the model the job started from (rlhf_engine/samples.py)."""

    id: str
    object: Literal["fine_tuning.job.sample"] = "fine_tuning.job.sample"
    created_at: int
    fine_tuning_job_id: str
    step: int
    index: int
    prompt: list[SampleMessage]
    completion: str = Field(description="the first reply")
    dialogue: list[SampleMessage] | None = Field(description="online methods: every message after the prompt, "
                                                             "simulated user turns included; otherwise null")

    @classmethod
    def from_row(cls, row: SampleRow) -> "Sample":
        return cls(id=row.id, created_at=row.created_at, fine_tuning_job_id=row.job_id, step=row.step,
                   index=row.prompt_index, prompt=row.prompt, completion=row.completion, dialogue=row.dialogue)


class Model(Response):
    """`/v1/models`: a registry model (`owned_by` "system") or a project's fine-tuned model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
