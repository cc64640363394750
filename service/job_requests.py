"""Turn a `JobCreate` body into a job the worker can run, or refuse it with a 400.

Every check that can fail runs here, before any row is written: a refused request leaves no
trace in the store.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf_engine.model_registry import ModelRegistry, UnknownModel
from rlhf_engine.spec import ACCEPTED_FORMATS, Method, SupervisedMethod
from service.errors import bad_request
from service.schemas import JobCreate
from service.store.models import FileRow


@dataclass(frozen=True)
class ResolvedJob:
    model: str
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


def resolve(body: JobCreate, db: Session, registry: ModelRegistry, project_id: str) -> ResolvedJob:
    try:
        entry = registry.get(body.model)
    except UnknownModel as err:
        raise bad_request(f"Model {body.model!r} is not available. Available models: "
                          f"{', '.join(err.known)}.", param="model", code="model_not_available") from None
    if entry.kind != "causal_lm":
        raise bad_request(f"Model {body.model!r} is a {entry.kind}, not a model that can be fine-tuned.",
                          param="model", code="model_not_available")
    method = _method(body)
    if body.export_merged and method.type == "reward_model":
        raise bad_request("export_merged is for generative models; a reward model's adapter includes its score "
                          "head and is downloaded from .../adapter.", param="export_merged",
                          code="invalid_value")
    training = _file(db, project_id, body.training_file, "training_file", method)
    validation = (_file(db, project_id, body.validation_file, "validation_file", method)
                  if body.validation_file else None)
    # OpenAI picks a seed when none is given and reports it, so every job is reproducible.
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return ResolvedJob(model=body.model, training_file=training, validation_file=validation,
                       method=method, seed=seed, queue=entry.queue)
