"""The `ft:` names of fine-tuned models and their checkpoints, in OpenAI's shape.

    ft:{base model}:{project}:{suffix}:{job id}                  a job's final model
    ft:{base model}:{project}:{suffix}:{job id}:ckpt-step-{n}    one of its checkpoints

OpenAI writes the organisation where we write the project (the tenant that owns the model) and
leaves the suffix empty when none was given (`ft:base:org::id`). The base is always the registry
model the weights started from, also for a job that continued from another `ft:` model.

A name is only ever *read back* through `parse`, which recovers the job id and step; whoever
resolves it must then check that the job's own name is exactly the one given, so that a name
with another project or base in it never resolves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CHECKPOINT = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>[1-9][0-9]{0,9})$")


def fine_tuned_model(base_model: str, project_id: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base_model}:{project_id}:{suffix or ''}:{job_id}"


def checkpoint_model(model_name: str, step: int) -> str:
    return f"{model_name}:ckpt-step-{step}"


@dataclass(frozen=True)
class ParsedName:
    model: str  # the job's final-model name (the checkpoint part removed)
    job_id: str
    step: int | None  # set for a checkpoint name


def parse(name: str) -> ParsedName | None:
    """The job (and step) a `ft:` name points at, or None for anything else (a registry name)."""
    step = None
    if m := _CHECKPOINT.match(name):
        name, step = m.group("model"), int(m.group("step"))
    parts = name.split(":")
    if parts[0] != "ft" or len(parts) < 5 or not parts[-1]:
        return None
    return ParsedName(model=name, job_id=parts[-1], step=step)


def job_model_name(job) -> str:
    """The `ft:` name a job's model has (or will have once it succeeds); `job` is a jobs row."""
    return fine_tuned_model(job.base_model, job.project_id, job.suffix, job.id)
