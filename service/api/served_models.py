"""What a chat request's `model` names: a registry base model, or a LoRA adapter on one.

    registry name                    -> the base itself
    ft:... (this project's, succeeded) -> the job's final adapter (for a chained job: one combined
                                        LoRA that loads on the registry base, rlhf_engine/export.py)
    ft:...:ckpt-step-N              -> that checkpoint's adapter

Another project's name, a deleted model, a name that is not exactly the job's: 404, as for
`GET /v1/models/{name}` (service/api/lookups.py). The adapter's directory is made local first
(fetched from the bucket when one is configured), because the backend reads it by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from rlhf_engine.model_registry import ModelRegistry
from service.api.errors import APIError, artifact_store_unavailable, bad_request, not_found
from service.api.lookups import get_checkpoint_model, get_fine_tuned_model
from service.shared import model_names
from service.shared.artifacts import ArtifactStore, ArtifactStoreUnavailable


@dataclass(frozen=True)
class Served:
    name: str  # the model as the caller named it, and as the backend is asked for it
    base_model: str  # the registry model under it
    adapter_dir: Path | None  # None: the base itself


def resolve(db: Session, registry: ModelRegistry, store: ArtifactStore, project_id: str, model: str) -> Served:
    parsed = model_names.parse(model)
    if parsed is None:
        if model not in registry:
            raise not_found("model", model, param="model")
        if (kind := registry.get(model).kind) != "causal_lm":
            raise bad_request(f"Model {model!r} is a {kind}, not a chat model.", param="model",
                              code="model_not_chat")
        return Served(model, model, None)
    if parsed.step is None:
        job = get_fine_tuned_model(db, project_id, model)
        published = key = store.adapter_key(job.id)
    else:
        job, ckpt = get_checkpoint_model(db, project_id, model)
        if job.init_adapters:
            # A chained job's checkpoint holds only its own update, on top of the adapters it
            # started from; a backend applies one LoRA per request, so it has nothing to load.
            raise bad_request(f"Model {model!r} is a checkpoint of a chained job: only its final model "
                              f"({parsed.model!r}, once it has succeeded) can be served.", param="model",
                              code="model_not_servable")
        published, key = ckpt.storage_key, f"{ckpt.storage_key}/adapter"
    if (job.method or {}).get("type") == "reward_model":
        raise bad_request(f"Model {model!r} is a reward model, not a chat model.", param="model",
                          code="model_not_chat")
    try:
        store.local_dir(published)  # the worker published the checkpoint as one unit
    except ArtifactStoreUnavailable:
        raise artifact_store_unavailable("the model's adapter could not be fetched") from None
    adapter_dir = store.path(key)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise APIError(404, f"The adapter of model {model!r} is missing from the artifact store.",
                       param="model", code="adapter_not_found")
    return Served(model, job.base_model, adapter_dir)
