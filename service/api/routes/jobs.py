"""`/v1/fine_tuning/jobs`: create (with `Idempotency-Key`), list, retrieve, cancel, pause, resume.

What a job produces (events, checkpoints, metrics, adapters) is served by job_outputs.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api import job_requests
from service.api.auth import Caller, CallerDep
from service.api.deps import DB, Artifacts, Registry, SettingsDep
from service.api.errors import APIError, bad_request
from service.api.lookups import get_job
from service.api.pagination import paginate
from service.api.schemas import FineTuningJob, JobCreate, ListObject
from service.shared import queue
from service.shared.events import add_event
from service.shared.store.models import CANCELLED, PAUSED, QUEUED, RUNNING, TERMINAL, VALIDATING, JobRow, new_id, now

log = logging.getLogger(__name__)
router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])

_METADATA_QUERY = re.compile(r"^metadata\[(.{1,64})\]$")


def _send(db: Session, job: JobRow) -> None:
    """Enqueue a committed `queued` job; a broker that is down leaves it queued with a warning."""
    try:
        queue.enqueue_job(job.id, job.queue)
        queue.mark_sent(db, job.id)
        db.commit()
    except Exception as err:  # the reaper / a later resume re-sends it
        log.warning("could not enqueue %s: %s", job.id, err)
        add_event(db, job.id, "The job queue could not be reached; the job stays queued and will be sent again "
                              "automatically.", kind="requeued", level="warn")
        db.commit()


def _request_hash(body: JobCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(db: Session, caller: Caller, key: str, digest: str) -> JobRow | None:
    """The job an earlier request with this key created, or 409 if that request had another body."""
    job = db.scalar(select(JobRow).where(JobRow.project_id == caller.project_id, JobRow.idempotency_key == key))
    if job is not None and job.request_hash != digest:
        raise APIError(409, "This Idempotency-Key was already used with a different request body.",
                       param="Idempotency-Key", code="idempotency_key_reused")
    return job


@router.post("", response_model=FineTuningJob)
def create_job(body: JobCreate, db: DB, registry: Registry, store: Artifacts, caller: CallerDep,
               settings: SettingsDep,
               idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                             max_length=255)] = None) -> FineTuningJob:
    digest = _request_hash(body) if idempotency_key else None
    if idempotency_key and (earlier := _replay(db, caller, idempotency_key, digest)):
        return FineTuningJob.from_row(earlier)
    resolved = job_requests.resolve(body, db, registry, store, caller.project_id)  # 400 before any write
    job = JobRow(id=new_id("ftjob"), project_id=caller.project_id, model=resolved.model,
                 base_model=resolved.start.base_model, init_adapters=resolved.start.init_adapters,
                 parent_job_id=resolved.start.parent_job_id,
                 integrations=[i.model_dump(mode="json") for i in body.integrations or []],
                 training_file=resolved.training_file.id,
                 validation_file=resolved.validation_file.id if resolved.validation_file else None,
                 status=VALIDATING, method=resolved.method.public_dict(), seed=resolved.seed,
                 suffix=body.suffix, metadata_=body.metadata, idempotency_key=idempotency_key,
                 request_hash=digest, export_merged=body.export_merged, queue=resolved.queue or settings.queue)
    db.add(job)
    try:
        db.flush()  # the job row must exist before events reference it
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        db.rollback()
        if earlier := _replay(db, caller, idempotency_key or "", digest or ""):
            return FineTuningJob.from_row(earlier)
        raise
    add_event(db, job.id, f"Validating training file: {resolved.training_file.id}", kind="status")
    if resolved.validation_file:
        add_event(db, job.id, f"Validating validation file: {resolved.validation_file.id}", kind="status")
    # Files were validated line by line at upload, so here only their existence and format matter.
    job.status = QUEUED
    add_event(db, job.id, "Files validated, moving job to queued state", kind="status")
    db.commit()  # before enqueueing: a fast worker must find the row
    _send(db, job)
    return FineTuningJob.from_row(job)


def _metadata_filters(request: Request) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query parameters."""
    found = {}
    for name, value in request.query_params.items():
        if m := _METADATA_QUERY.match(name):
            found[m.group(1)] = value
        elif name.startswith("metadata"):
            raise bad_request(f"Invalid metadata filter {name!r}; use metadata[key]=value with a key of "
                              "1-64 characters.", param=name)
    return found


@router.get("", response_model=ListObject[FineTuningJob])
def list_jobs(request: Request, db: DB, caller: CallerDep, after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ListObject[FineTuningJob]:
    stmt = select(JobRow).where(JobRow.project_id == caller.project_id)
    for key, value in _metadata_filters(request).items():
        stmt = stmt.where(JobRow.metadata_[key].as_string() == value)
    rows, has_more = paginate(db, stmt, JobRow, after=after, limit=limit)
    return ListObject.page([FineTuningJob.from_row(r) for r in rows], has_more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob)
def retrieve_job(db: DB, caller: CallerDep, fine_tuning_job_id: str) -> FineTuningJob:
    return FineTuningJob.from_row(get_job(db, caller.project_id, fine_tuning_job_id))


def _conflict(job: JobRow, verb: str, allowed: str, code: str) -> APIError:
    return APIError(409, f"Job {job.id!r} is {job.status}; only {allowed} job can be {verb}.",
                    param="fine_tuning_job_id", code=code)


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
def cancel_job(db: DB, caller: CallerDep, fine_tuning_job_id: str) -> FineTuningJob:
    # Locked so that the worker cannot mark the job succeeded between our check and our write.
    job = get_job(db, caller.project_id, fine_tuning_job_id, for_update=True)
    if job.status in TERMINAL:
        raise _conflict(job, "cancelled", "an unfinished", "job_not_cancellable")
    # The worker polls the row between steps and stops when it sees `cancelled`.
    job.status, job.finished_at = CANCELLED, now()
    add_event(db, job.id, "Job cancelled", kind="status")
    db.commit()
    return FineTuningJob.from_row(job)


@router.post("/{fine_tuning_job_id}/pause", response_model=FineTuningJob)
def pause_job(db: DB, caller: CallerDep, fine_tuning_job_id: str) -> FineTuningJob:
    job = get_job(db, caller.project_id, fine_tuning_job_id, for_update=True)
    if job.status not in (QUEUED, RUNNING):
        raise _conflict(job, "paused", "a queued or running", "job_not_pausable")
    # A running worker sees the status change at its next step, saves a checkpoint and exits; a
    # queued job's message finds it paused and is dropped (the worker only starts queued jobs).
    job.status = PAUSED
    add_event(db, job.id, "Job paused", kind="status")
    db.commit()
    return FineTuningJob.from_row(job)


@router.post("/{fine_tuning_job_id}/resume", response_model=FineTuningJob)
def resume_job(db: DB, caller: CallerDep, fine_tuning_job_id: str) -> FineTuningJob:
    job = get_job(db, caller.project_id, fine_tuning_job_id, for_update=True)
    if job.status != PAUSED:
        raise _conflict(job, "resumed", "a paused", "job_not_resumable")
    if job.lease_owner is not None and (job.lease_expires_at or 0) > now():
        # The worker is still writing its checkpoint; a message sent now would find the lease taken.
        raise APIError(409, f"Job {job.id!r} is still stopping; retry in a few seconds.",
                       param="fine_tuning_job_id", code="job_still_pausing", headers={"retry-after": "2"})
    job.status = QUEUED
    add_event(db, job.id, "Job resumed; it continues from its latest checkpoint", kind="status")
    db.commit()
    _send(db, job)
    return FineTuningJob.from_row(job)
