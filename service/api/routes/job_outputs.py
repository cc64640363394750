"""What a job produces, as the worker recorded it: events (also live, as server-sent events),
checkpoints, metrics, samples and adapters. Every route first finds the job in the caller's project."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from rlhf_engine.spec import Method
from service.api import sse
from service.api.auth import CallerDep
from service.api.deps import DB, Artifacts, SettingsDep
from service.api.errors import APIError, artifact_store_unavailable, bad_request, not_found
from service.api.lookups import get_job
from service.api.pagination import paginate
from service.api.schemas import Checkpoint, Event, ListObject, MetricPoint, Sample
from service.shared.artifacts import ArtifactStore, ArtifactStoreUnavailable
from service.shared.store.models import SUCCEEDED, CheckpointRow, EventRow, JobRow, MetricRow, SampleRow

router = APIRouter(prefix="/fine_tuning/jobs/{fine_tuning_job_id}", tags=["fine-tuning"])

_ZIP = {200: {"content": {"application/zip": {}}, "description": "PEFT adapter archive"}}
_EVENTS = {200: {"content": {"text/event-stream": {}},
                 "description": "A list of events, or with stream=true server-sent events, oldest first"}}


def _event_seq(db: Session, job_id: str, event_id: str, param: str) -> int:
    seq = db.scalar(select(EventRow.seq).where(EventRow.job_id == job_id, EventRow.id == event_id))
    if seq is None:
        raise bad_request(f"No such event in this job: {event_id!r}", param=param)
    return seq


@router.get("/events", response_model=ListObject[Event], responses=_EVENTS)
def list_events(db: DB, caller: CallerDep, settings: SettingsDep, fine_tuning_job_id: str,
                after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                stream: bool = False,
                last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None):
    """Newest first, as OpenAI; with `stream=true` a live stream, oldest first, that ends when the
    job has finished (resume with the `Last-Event-ID` header or `after`)."""
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    if stream:
        cursor, param = (last_event_id, "Last-Event-ID") if last_event_id else (after, "after")
        after_seq = _event_seq(db, job.id, cursor, param) if cursor else 0
        db.close()  # a stream lasts as long as the job: it must not hold a request connection (service/api/sse.py)
        return sse.EventStreamResponse(caller.limit_key, job.id, after_seq, settings)
    stmt = select(EventRow).where(EventRow.job_id == job.id)
    rows, has_more = paginate(db, stmt, EventRow, after=after, limit=limit)
    return ListObject.page([Event.from_row(r) for r in rows], has_more)


@router.get("/checkpoints", response_model=ListObject[Checkpoint])
def list_checkpoints(db: DB, caller: CallerDep, fine_tuning_job_id: str, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 10) -> ListObject[Checkpoint]:
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    stmt = select(CheckpointRow).where(CheckpointRow.job_id == job.id)
    rows, has_more = paginate(db, stmt, CheckpointRow, after=after, limit=limit)
    return ListObject.page([Checkpoint.from_row(r, job) for r in rows], has_more)


def downsample(rows: list, max_points: int) -> list:
    """At most `max_points` rows, evenly spaced over the list, always keeping the first and last."""
    n = len(rows)
    if n <= max_points:
        return rows
    if max_points == 1:
        return rows[-1:]
    return [rows[round(i * (n - 1) / (max_points - 1))] for i in range(max_points)]


@router.get("/metrics", response_model=ListObject[MetricPoint])
def list_metrics(db: DB, caller: CallerDep, fine_tuning_job_id: str,
                 kind: Annotated[str | None, Query(max_length=16)] = None,
                 min_step: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
                 max_step: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
                 max_points: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> ListObject[MetricPoint]:
    """Logged steps in step order, optionally within [min_step, max_step] and thinned to
    `max_points` per kind (train and eval curves are thinned separately)."""
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    stmt = select(MetricRow).where(MetricRow.job_id == job.id)
    if kind is not None:
        stmt = stmt.where(MetricRow.kind == kind)
    if min_step is not None:
        stmt = stmt.where(MetricRow.step >= min_step)
    if max_step is not None:
        stmt = stmt.where(MetricRow.step <= max_step)
    rows = list(db.scalars(stmt.order_by(MetricRow.step, MetricRow.kind)))
    if max_points is not None:
        by_kind: dict[str, list] = {}
        for r in rows:
            by_kind.setdefault(r.kind, []).append(r)
        rows = sorted((r for group in by_kind.values() for r in downsample(group, max_points)),
                      key=lambda r: (r.step, r.kind))
    return ListObject(data=[MetricPoint(step=r.step, kind=r.kind, values=r.values, created_at=r.created_at)
                            for r in rows], has_more=False)


@router.get("/samples", response_model=ListObject[Sample])
def list_samples(db: DB, caller: CallerDep, fine_tuning_job_id: str, after: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> ListObject[Sample]:
    """The model's replies at each evaluation, oldest first: step 0 (the base model), then each
    evaluated step, by prompt (the worker keeps insertion order the step order, even on replay)."""
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    stmt = select(SampleRow).where(SampleRow.job_id == job.id)
    rows, has_more = paginate(db, stmt, SampleRow, after=after, limit=limit, newest_first=False)
    return ListObject.page([Sample.from_row(r) for r in rows], has_more)


def _zip_response(store: ArtifactStore, key: str, filename: str,
                  published_as: str | None = None) -> StreamingResponse:
    """`key` zipped; `published_as`: the directory the worker published as one unit, when `key` is
    part of it (a checkpoint's adapter), so it is fetched whole from the bucket first."""
    try:
        if published_as is not None:
            store.local_dir(published_as)
        chunks = store.zip_stream(key)
    except FileNotFoundError:
        raise APIError(404, "The archive's files are missing from the artifact store.",
                       code="adapter_not_found") from None
    except ArtifactStoreUnavailable:
        raise artifact_store_unavailable("the archive's files could not be fetched") from None
    return StreamingResponse(chunks, media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _full(job: JobRow) -> bool:
    """Whether the job trains every weight (`finetuning_type: "full"`): its output is a whole model
    (.../merged_model), and it has no adapter."""
    return Method.model_validate(job.method).hyperparameters.full


def _no_adapter(job: JobRow) -> APIError:
    return APIError(404, f"Job {job.id!r} fine-tunes every weight (finetuning_type 'full'), so it has no adapter; "
                         "its model is at .../merged_model.", param="fine_tuning_job_id", code="adapter_not_available")


@router.get("/adapter", response_class=Response, responses=_ZIP)
def download_adapter(db: DB, store: Artifacts, caller: CallerDep, fine_tuning_job_id: str) -> Response:
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    if _full(job):
        raise _no_adapter(job)
    if job.status != SUCCEEDED:
        raise APIError(409, f"Job {job.id!r} is {job.status}; the final adapter exists once it has "
                            "succeeded.", param="fine_tuning_job_id", code="adapter_not_ready")
    return _zip_response(store, store.adapter_key(job.id), f"{job.id}-adapter.zip")


@router.get("/checkpoints/{checkpoint_id}/adapter", response_class=Response, responses=_ZIP)
def download_checkpoint_adapter(db: DB, store: Artifacts, caller: CallerDep, fine_tuning_job_id: str,
                                checkpoint_id: str) -> Response:
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    ckpt = db.scalar(select(CheckpointRow).where(CheckpointRow.id == checkpoint_id,
                                                 CheckpointRow.job_id == job.id))
    if ckpt is None:
        raise not_found("checkpoint", checkpoint_id, param="checkpoint_id")
    if _full(job):
        raise _no_adapter(job)
    return _zip_response(store, f"{ckpt.storage_key}/adapter", f"{job.id}-step-{ckpt.step_number}-adapter.zip",
                         published_as=ckpt.storage_key)


_MERGED_ZIP = {200: {"content": {"application/zip": {}},
                     "description": "transformers model directory (safetensors, config, tokenizer)"}}


@router.get("/merged_model", response_class=Response, responses=_MERGED_ZIP)
def download_merged_model(db: DB, store: Artifacts, caller: CallerDep, fine_tuning_job_id: str) -> Response:
    """The base weights with the final LoRA update folded in, for jobs created with `export_merged`;
    a full fine-tune's weights (`finetuning_type: "full"`), always."""
    job = get_job(db, caller.project_id, fine_tuning_job_id)
    if not (job.export_merged or _full(job)):
        raise APIError(404, f"Job {job.id!r} was not created with export_merged=true, so it has no merged "
                            "weights; its adapter is at .../adapter.", param="fine_tuning_job_id",
                       code="merged_model_not_requested")
    if job.status != SUCCEEDED:
        raise APIError(409, f"Job {job.id!r} is {job.status}; the merged weights exist once it has succeeded.",
                       param="fine_tuning_job_id", code="merged_model_not_ready")
    return _zip_response(store, store.merged_key(job.id), f"{job.id}-merged.zip")
