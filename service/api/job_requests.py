"""Turn a `JobCreate` body into a job the worker can run, or refuse it with a 400.

Every check that can fail runs here, before any row is written: a refused request leaves no
trace in the store.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf_engine.model_registry import ModelEntry, ModelRegistry, UnknownModel
from rlhf_engine.spec import ACCEPTED_FORMATS, Method, SupervisedMethod
from service.api.errors import APIError, bad_request
from service.api.schemas import JobCreate
from service.shared import model_names
from service.shared.artifacts import ArtifactStore
from service.shared.model_names import job_model_name
from service.shared.store.models import SUCCEEDED, CheckpointRow, FileRow, JobRow


@dataclass(frozen=True)
class Start:
    """What a job's weights start from: a registry model, plus the adapters of an `ft:` model."""

    base_model: str
    entry: ModelEntry
    init_adapters: list[str]  # storage keys, merged into the base in this order
    parent_job_id: str | None


@dataclass(frozen=True)
class ResolvedJob:
    model: str
    start: Start
    training_file: FileRow
    validation_file: FileRow | None
    method: Method
    seed: int
    queue: str | None  # the model's queue in the operator's registry, if it names one


def _method(body: JobCreate) -> Method:
    if body.method is not None and body.hyperparameters is not None:
        raise bad_request("Give hyperparameters inside 'method' or at the top level, not both; "
                          "the top-level form is deprecated.", param="hyperparameters")
    if body.method is not None:
        return body.method
    # OpenAI's default when `method` is absent: supervised, with the deprecated top-level values.
    if body.hyperparameters is not None:
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=body.hyperparameters))
    return Method(type="supervised")


def _file(db: Session, project_id: str, file_id: str, param: str, method: Method) -> FileRow:
    # Another project's file is as unknown as a file that does not exist.
    row = db.scalar(select(FileRow).where(FileRow.id == file_id, FileRow.project_id == project_id))
    if row is None:
        # An unknown file named in a job body is a bad request (OpenAI answers 400 too), not a 404.
        raise bad_request(f"Invalid {param}: no file with id {file_id!r}.", param=param, code="invalid_file")
    if row.purpose != "fine-tune":
        raise bad_request(f"Invalid {param}: file {file_id!r} has purpose {row.purpose!r}, not 'fine-tune'.",
                          param=param, code="invalid_file")
    accepted = ACCEPTED_FORMATS.get(method.type, ())
    if row.format not in accepted:
        raise bad_request(
            f"Invalid {param}: file {file_id!r} is in the {row.format!r} format; method {method.type!r} accepts "
            f"{', '.join(repr(f) for f in accepted)}.", param=param, code="invalid_file_format")
    return row


def _unavailable(model: str, why: str) -> APIError:
    return bad_request(f"Model {model!r} is not available: {why}.", param="model", code="model_not_available")


def _registry_entry(registry: ModelRegistry, name: str) -> ModelEntry:
    try:
        entry = registry.get(name)
    except UnknownModel as err:
        raise bad_request(f"Model {name!r} is not available. Available models: {', '.join(err.known)}, "
                          "or a fine-tuned model of this project (GET /v1/models).", param="model",
                          code="model_not_available") from None
    if entry.kind != "causal_lm":
        raise bad_request(f"Model {name!r} is a {entry.kind}, not a model that can be fine-tuned.",
                          param="model", code="model_not_available")
    return entry


def start_of(db: Session, registry: ModelRegistry, store: ArtifactStore, project_id: str, model: str) -> Start:
    """`model` as a registry name, or as this project's `ft:` model or checkpoint name.

    A final model's adapter already holds every update under it (a chained job exports one
    combined adapter), so it is the only adapter to merge; a checkpoint holds only its own job's
    update, so the adapters that job started from come first."""
    name = model_names.parse(model)
    if name is None:
        return Start(model, _registry_entry(registry, model), [], None)
    # Another project's job, a name that is not exactly the job's, a deleted model: all the same
    # to the caller, so nothing is learnt about other projects.
    parent = db.scalar(select(JobRow).where(JobRow.id == name.job_id, JobRow.project_id == project_id))
    if parent is None or job_model_name(parent) != name.model:
        raise _unavailable(model, "no fine-tuned model of this project has that name")
    entry = _registry_entry(registry, parent.base_model)
    if name.step is None:
        if parent.status != SUCCEEDED or parent.model_deleted_at is not None:
            raise _unavailable(model, f"its job is {parent.status}" if parent.status != SUCCEEDED
                               else "it was deleted")
        return Start(parent.base_model, entry, [store.adapter_key(parent.id)], parent.id)
    ckpt = db.scalar(select(CheckpointRow).where(CheckpointRow.job_id == parent.id,
                                                 CheckpointRow.step_number == name.step))
    if ckpt is None:
        raise _unavailable(model, f"job {parent.id!r} has no checkpoint at step {name.step}")
    return Start(parent.base_model, entry, [*(parent.init_adapters or []), ckpt.storage_key], parent.id)


def resolve(body: JobCreate, db: Session, registry: ModelRegistry, store: ArtifactStore,
            project_id: str) -> ResolvedJob:
    start = start_of(db, registry, store, project_id, body.model)
    method = _method(body)
    if start.parent_job_id and method.type == "reward_model":
        raise bad_request("A reward model starts from a registry model: its score head is new, and a fine-tuned "
                          "model is a generative one.", param="model", code="model_not_available")
    if body.export_merged and method.type == "reward_model":
        raise bad_request("export_merged is for generative models; a reward model's adapter includes its score "
                          "head and is downloaded from .../adapter.", param="export_merged",
                          code="invalid_value")
    training = _file(db, project_id, body.training_file, "training_file", method)
    validation = (_file(db, project_id, body.validation_file, "validation_file", method)
                  if body.validation_file else None)
    # OpenAI picks a seed when none is given and reports it, so every job is reproducible.
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return ResolvedJob(model=body.model, start=start, training_file=training, validation_file=validation,
                       method=method, seed=seed, queue=start.entry.queue)
