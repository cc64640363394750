"""`/v1/models`: the registry's models and the project's fine-tuned ones; delete a fine-tuned one.

A fine-tuned model is a succeeded job's final adapter, named `ft:...` (service/shared/model_names.py) and
owned by its project; other projects' names answer 404. Registry models belong to the operator
(`owned_by: "system"`) and cannot be deleted through the API.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from service.api.auth import CallerDep
from service.api.deps import DB, Artifacts, Registry
from service.api.errors import APIError, artifact_store_unavailable, bad_request
from service.api.lookups import get_fine_tuned_model
from service.api.schemas import Deleted, ListObject, Model
from service.shared.artifacts import ArtifactStoreUnavailable
from service.shared.store.models import ACTIVE, SUCCEEDED, JobRow, now

router = APIRouter(prefix="/models", tags=["models"])

SYSTEM = "system"
# Registry entries have no creation time of their own; OpenAI's `created` is required, so 0.
REGISTRY_CREATED = 0


def _fine_tuned(row: JobRow) -> Model:
    return Model(id=row.fine_tuned_model, created=row.finished_at or row.created_at, owned_by=row.project_id)


@router.get("", response_model=ListObject[Model])
def list_models(db: DB, registry: Registry, caller: CallerDep) -> ListObject[Model]:
    """Registry models by name, then the project's fine-tuned models, newest first (one page, as
    OpenAI's list)."""
    builtin = [Model(id=name, created=REGISTRY_CREATED, owned_by=SYSTEM) for name in registry.names()]
    # A succeeded job is a model once the worker has named it (the same commit, worker/tasks.py);
    # a row without a name is not listable, whatever wrote it.
    rows = db.scalars(select(JobRow).where(JobRow.project_id == caller.project_id, JobRow.status == SUCCEEDED,
                                           JobRow.fine_tuned_model.is_not(None),
                                           JobRow.model_deleted_at.is_(None)).order_by(JobRow.seq.desc()))
    return ListObject.page([*builtin, *(_fine_tuned(r) for r in rows)], has_more=False)


@router.get("/{model:path}", response_model=Model)
def retrieve_model(db: DB, registry: Registry, caller: CallerDep, model: str) -> Model:
    if model in registry:
        return Model(id=model, created=REGISTRY_CREATED, owned_by=SYSTEM)
    return _fine_tuned(get_fine_tuned_model(db, caller.project_id, model))


@router.delete("/{model:path}", response_model=Deleted)
def delete_model(db: DB, store: Artifacts, registry: Registry, caller: CallerDep, model: str) -> Deleted:
    """Unlists the model and deletes its adapter (and merged weights) from storage; the job and its
    checkpoints stay. Refused while an unfinished job starts from it."""
    if model in registry:
        raise bad_request(f"Model {model!r} is the operator's (the model registry); only fine-tuned models "
                          "can be deleted.", param="model", code="model_not_deletable")
    job = get_fine_tuned_model(db, caller.project_id, model, for_update=True)
    user = db.scalar(select(JobRow.id).where(JobRow.parent_job_id == job.id, JobRow.status.in_(ACTIVE)).limit(1))
    if user is not None:
        raise APIError(409, f"Model {model!r} is the starting point of job {user!r}, which has not finished.",
                       param="model", code="model_in_use")
    job.model_deleted_at = now()
    db.commit()
    # Bytes after the row, as for files: a failure in between leaves an orphan, never a listed model
    # without its adapter.
    try:
        for key in (store.adapter_key(job.id), store.merged_key(job.id)):
            store.delete_dir(key)
    except ArtifactStoreUnavailable:
        raise artifact_store_unavailable("the model is deleted, but its files stay in the bucket") from None
    return Deleted(id=model, object="model")
