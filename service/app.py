"""The API process: `uvicorn service.app:app`.

Routes live under /v1 in OpenAI's shapes; `/healthz`, `/readyz` and `/metrics` serve operators.
On start-up the schema is checked: SQLite (the embedded default) is migrated on the spot, a
server database must have been migrated beforehand with `python -m service.migrate`, because
several API replicas racing to migrate one Postgres is worse than a clear refusal to start.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import migrate
from service.api import auth, dashboard, errors, limits, observability, sse
from service.api.routes import chat, files, job_outputs, jobs, models, ops
from service.shared.logging import configure_logging
from service.shared.settings import get_settings

log = logging.getLogger(__name__)
GIL_SWITCH_INTERVAL_S = 0.0005


def prepare_database(url: str) -> None:
    if url.startswith("sqlite"):
        migrate.upgrade(url)
    elif not migrate.is_current(url):
        raise RuntimeError("The database schema is not up to date. Apply the migrations first: "
                           "RLHF_DATABASE_URL=... python -m service.migrate")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    prepare_database(get_settings().database_url)
    # Sync routes and dependencies run in a thread pool, so every request hands the GIL between the
    # event loop and a pool thread several times. With CPython's default 5 ms switch interval a
    # thread whose query just returned can wait up to 5 ms for the GIL while another computes;
    # under load those waits dominate the latency tail. 0.5 ms bounds them (bench/README.md).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Everything built so far (modules, schemas, the ORM mapping) lives as long as the process.
    # Freezing it keeps the cyclic GC from rescanning it: full collections took 45-100 ms here.
    gc.freeze()
    sse.install_shutdown_hook()  # live event streams end when uvicorn is told to stop
    log.info("API ready")
    yield


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = FastAPI(title="RLHF service", version="0.1.0", lifespan=lifespan,
                  description="Self-hostable alignment training with an OpenAI-compatible API.",
                  responses=errors.ERROR_RESPONSES)
    errors.install(app, authenticate=auth.refusal)
    # Outermost last: the request id and access log wrap everything, including size refusals.
    app.add_middleware(limits.UploadGate, identify=auth.limit_key)  # inner: only uploads within the size limit
    app.add_middleware(limits.BodySizeLimit)
    app.add_middleware(observability.RequestContext)
    for router in (files.router, jobs.router, job_outputs.router, models.router, chat.router):
        app.include_router(router, prefix="/v1")
    app.include_router(ops.router)
    app.include_router(dashboard.router)  # the web dashboard (service/api/dashboard/) at /dashboard
    return app


app = create_app()
