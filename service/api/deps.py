"""What routes receive through FastAPI's `Depends`: settings, a database session, the artifact store
and the model registry. Routes declare them with the `Annotated` aliases at the bottom."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from rlhf_engine.model_registry import ModelRegistry
from service.shared.artifact_s3 import S3Location
from service.shared.artifacts import ArtifactStore
from service.shared.settings import Settings, get_settings
from service.shared.store.session import session_scope


# Dependencies that do no I/O are `async def`: FastAPI then calls them on the event loop instead of
# handing each to the thread pool, and every thread hop costs CPU and GIL hand-offs per request.
async def settings_dep() -> Settings:
    return get_settings()


def db_session(settings: Annotated[Settings, Depends(settings_dep)]) -> Iterator[Session]:
    """One transaction per request: rolled back if the handler raises, committed otherwise.

    Handlers that write call `db.commit()` themselves before answering, so a client never sees a
    success for a write that did not land; the commit here only catches what is left.
    """
    with session_scope(settings.database_url) as session:
        yield session


@lru_cache
def _artifacts(root: Path, s3: S3Location | None) -> ArtifactStore:
    # One store per process and configuration: it holds the (lazily built) S3 client.
    return ArtifactStore.at(root, s3)


async def artifacts_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> ArtifactStore:
    return _artifacts(settings.artifacts_dir, S3Location.from_settings(settings))


@lru_cache
def _registry(path: Path | None) -> ModelRegistry:
    # Read once per process: the operator restarts the API after editing the registry file.
    return ModelRegistry.load(path)


async def registry_dep(settings: Annotated[Settings, Depends(settings_dep)]) -> ModelRegistry:
    return _registry(settings.model_registry)


SettingsDep = Annotated[Settings, Depends(settings_dep)]
DB = Annotated[Session, Depends(db_session)]
Artifacts = Annotated[ArtifactStore, Depends(artifacts_dep)]
Registry = Annotated[ModelRegistry, Depends(registry_dep)]
