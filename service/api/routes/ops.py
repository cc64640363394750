"""Operations endpoints, outside /v1 and without API keys (keep them on the internal network):

- `/healthz`: the process answers.
- `/readyz`: the database answers `SELECT 1`, the broker is reachable (Redis: PING; kombu's
  SQLAlchemy transport: a connection to its database) and, when one is configured, the artifact
  bucket answers HEAD. 503 with the envelope naming the failing dependency, so a load balancer
  stops routing to a replica that cannot work.
- `/metrics`: Prometheus text format: job and queue gauges read at scrape time (the database and
  the broker are the same for every process) and the HTTP metrics of every API process
  (service/api/metrics.py).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import create_engine, func, select, text

from rlhf_engine.model_registry import ModelRegistry
from service.api import metrics
from service.api.deps import Artifacts, Registry, SettingsDep
from service.api.errors import SERVER_ERROR, APIError
from service.api.metrics import GaugeMetricFamily
from service.shared.settings import Settings
from service.shared.store.models import RUNNING, JobRow, MetricRow
from service.shared.store.session import get_engine, session_scope

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
_TIMEOUT = 2  # seconds: readiness must answer quickly even when a dependency hangs


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@lru_cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT)


@lru_cache
def _sqla_broker_engine(url: str):
    return create_engine(url.removeprefix("sqla+"), pool_pre_ping=True)


def _check_broker(url: str) -> None:
    if url.startswith(("redis://", "rediss://")):
        _redis(url).ping()
    elif url.startswith("sqla+"):
        with _sqla_broker_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
    else:  # any other kombu transport
        from kombu import Connection

        with Connection(url, connect_timeout=_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1)


def _check_database(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/readyz")
def readyz(settings: SettingsDep, store: Artifacts) -> dict[str, str]:
    checks = [("database", lambda: _check_database(settings.database_url)),
              ("broker", lambda: _check_broker(settings.broker_url))]
    if store.remote is not None:  # a local directory alone has nothing to be unreachable
        checks.append(("artifact_store", store.check))
    for name, check in checks:
        try:
            check()
        except Exception as err:
            log.warning("readiness: %s unreachable: %s", name, err)
            raise APIError(503, f"Not ready: the {name.replace('_', ' ')} is unreachable ({type(err).__name__}).",
                           type=SERVER_ERROR, param=name, code="dependency_unavailable") from None
    return {"status": "ready"}


def _job_gauges(settings: Settings) -> list[GaugeMetricFamily]:
    with session_scope(settings.database_url) as s:
        counts = dict(s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all())
        running = s.execute(select(JobRow.id, JobRow.project_id).where(JobRow.status == RUNNING)).all()
        latest = {}
        for job_id, project_id in running:
            values = s.scalar(select(MetricRow.values).where(MetricRow.job_id == job_id, MetricRow.kind == "train")
                              .order_by(MetricRow.step.desc()).limit(1))
            latest[(job_id, project_id)] = values or {}
    jobs = GaugeMetricFamily("rlhf_jobs", "Jobs by status.", labels=["status"])
    for status in ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"):
        jobs.add_metric([status], counts.pop(status, 0))  # every status, 0 included
    for status, n in counts.items():
        jobs.add_metric([status], n)
    out = [jobs]
    for metric, key, help_ in (
            ("rlhf_job_step_seconds", "step_time", "Latest step time of a running job."),
            ("rlhf_job_tokens_per_second", "tokens_per_second", "Latest tokens/s of a running job.")):
        gauge = GaugeMetricFamily(metric, help_, labels=["job_id", "project"])
        for (job_id, project_id), values in latest.items():
            if key in values:
                gauge.add_metric([job_id, project_id], values[key])
        out.append(gauge)
    return out


def _queue_gauges(settings: Settings, registry: ModelRegistry) -> list[GaugeMetricFamily]:
    """Depth of this API's queue and of every queue the registry routes a model to."""
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return []  # only Redis queues are cheap to measure (LLEN)
    queues = sorted({settings.queue} | set(registry.queues()))
    try:
        client = _redis(settings.broker_url)
        depths = [(q, client.llen(q)) for q in queues]
    except Exception:
        return []
    gauge = GaugeMetricFamily("rlhf_queue_depth", "Messages waiting in the Celery queue.", labels=["queue"])
    for queue, depth in depths:
        gauge.add_metric([queue], depth)
    return [gauge]


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def prometheus_metrics(settings: SettingsDep, registry: Registry) -> PlainTextResponse:
    body = metrics.exposition(_job_gauges(settings) + _queue_gauges(settings, registry))
    return PlainTextResponse(body, media_type=metrics.CONTENT_TYPE)
