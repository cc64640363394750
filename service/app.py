"""The API process: `uvicorn service.app:app`.

Routes live under /v1 in OpenAI's shapes; `/healthz` answers as long as the process runs.
On start-up the schema is checked: SQLite (the embedded default) is migrated on the spot, a
server database must have been migrated beforehand with `python -m service.migrate`, because
several API replicas racing to migrate one Postgres is worse than a clear refusal to start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import errors, migrate
from service.routes import files, job_outputs, jobs
from service.settings import get_settings

log = logging.getLogger(__name__)


def prepare_database(url: str) -> None:
    if url.startswith("sqlite"):
        migrate.upgrade(url)
    elif not migrate.is_current(url):
        raise RuntimeError("The database schema is not up to date. Apply the migrations first: "
                           "RLHF_DATABASE_URL=... python -m service.migrate")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    prepare_database(get_settings().database_url)
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="RLHF service", version="0.1.0", lifespan=lifespan,
                  description="Self-hostable alignment training with an OpenAI-compatible API.")
    errors.install(app)
    for router in (files.router, jobs.router, job_outputs.router):
        app.include_router(router, prefix="/v1")

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
