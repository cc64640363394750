"""What a job produces, as the worker recorded it: events, checkpoints, metrics and adapters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select

from service.artifacts import ArtifactStore
from service.deps import DB, Artifacts
from service.errors import APIError, not_found
from service.lookups import get_job
from service.pagination import paginate
from service.schemas import Checkpoint, Event, ListObject, MetricPoint
from service.store.models import SUCCEEDED, CheckpointRow, EventRow, MetricRow

router = APIRouter(prefix="/fine_tuning/jobs/{fine_tuning_job_id}", tags=["fine-tuning"])


@router.get("/events", response_model=ListObject[Event])
def list_events(db: DB, fine_tuning_job_id: str, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> ListObject[Event]:
    job = get_job(db, fine_tuning_job_id)
    stmt = select(EventRow).where(EventRow.job_id == job.id)
    rows, has_more = paginate(db, stmt, EventRow, after=after, limit=limit)  # newest first, as OpenAI
    return ListObject.page([Event.from_row(r) for r in rows], has_more)


@router.get("/checkpoints", response_model=ListObject[Checkpoint])
def list_checkpoints(db: DB, fine_tuning_job_id: str, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 10) -> ListObject[Checkpoint]:
    job = get_job(db, fine_tuning_job_id)
    stmt = select(CheckpointRow).where(CheckpointRow.job_id == job.id)
    rows, has_more = paginate(db, stmt, CheckpointRow, after=after, limit=limit)
    return ListObject.page([Checkpoint.from_row(r, job) for r in rows], has_more)


@router.get("/metrics", response_model=ListObject[MetricPoint])
def list_metrics(db: DB, fine_tuning_job_id: str, kind: str | None = None,
                 min_step: Annotated[int | None, Query(ge=0)] = None,
                 max_step: Annotated[int | None, Query(ge=0)] = None) -> ListObject[MetricPoint]:
    """Every logged step in step order (a training curve is read whole; issue 5 adds downsampling)."""
    job = get_job(db, fine_tuning_job_id)
    stmt = select(MetricRow).where(MetricRow.job_id == job.id)
    if kind is not None:
        stmt = stmt.where(MetricRow.kind == kind)
    if min_step is not None:
        stmt = stmt.where(MetricRow.step >= min_step)
    if max_step is not None:
        stmt = stmt.where(MetricRow.step <= max_step)
    rows = db.scalars(stmt.order_by(MetricRow.step, MetricRow.kind))
    return ListObject(data=[MetricPoint(step=r.step, kind=r.kind, values=r.values, created_at=r.created_at)
                            for r in rows], has_more=False)


def _zip_response(store: ArtifactStore, key: str, filename: str) -> Response:
    try:
        data = store.zip_dir(key)
    except FileNotFoundError:
        raise APIError(404, "The adapter's files are missing from the artifact store.",
                       code="adapter_not_found") from None
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/adapter", response_class=Response,
            responses={200: {"content": {"application/zip": {}}, "description": "PEFT adapter archive"}})
def download_adapter(db: DB, store: Artifacts, fine_tuning_job_id: str) -> Response:
    job = get_job(db, fine_tuning_job_id)
    if job.status != SUCCEEDED:
        raise APIError(409, f"Job {job.id!r} is {job.status}; the final adapter exists once it has "
                            "succeeded.", param="fine_tuning_job_id", code="adapter_not_ready")
    return _zip_response(store, store.adapter_key(job.id), f"{job.id}-adapter.zip")


@router.get("/checkpoints/{checkpoint_id}/adapter", response_class=Response,
            responses={200: {"content": {"application/zip": {}}, "description": "PEFT adapter archive"}})
def download_checkpoint_adapter(db: DB, store: Artifacts, fine_tuning_job_id: str,
                                checkpoint_id: str) -> Response:
    job = get_job(db, fine_tuning_job_id)
    ckpt = db.scalar(select(CheckpointRow).where(CheckpointRow.id == checkpoint_id,
                                                 CheckpointRow.job_id == job.id))
    if ckpt is None:
        raise not_found("checkpoint", checkpoint_id, param="checkpoint_id")
    return _zip_response(store, f"{ckpt.storage_key}/adapter", f"{job.id}-step-{ckpt.step_number}-adapter.zip")
