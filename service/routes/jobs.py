"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel.

What a job produces (events, checkpoints, metrics, adapters) is served by job_outputs.py.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import job_requests, queue
from service.deps import DB, Registry
from service.errors import APIError
from service.lookups import get_job
from service.pagination import paginate
from service.schemas import FineTuningJob, JobCreate, ListObject
from service.store.models import CANCELLED, QUEUED, TERMINAL, VALIDATING, EventRow, JobRow, new_id, now

log = logging.getLogger(__name__)
router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])

_METADATA_QUERY = re.compile(r"^metadata\[(.+)\]$")


def add_event(db: Session, job_id: str, message: str, level: str = "info",
              type: str = "message", data: dict | None = None) -> EventRow:
    row = EventRow(id=new_id("ftevent"), job_id=job_id, level=level, message=message, type=type, data=data)
    db.add(row)
    return row


@router.post("", response_model=FineTuningJob)
def create_job(body: JobCreate, db: DB, registry: Registry) -> FineTuningJob:
    resolved = job_requests.resolve(body, db, registry)  # raises 400 before anything is written
    job = JobRow(id=new_id("ftjob"), model=resolved.model, training_file=resolved.training_file.id,
                 validation_file=resolved.validation_file.id if resolved.validation_file else None,
                 status=VALIDATING, method=resolved.method.public_dict(), seed=resolved.seed,
                 suffix=body.suffix, metadata_=body.metadata)
    db.add(job)
    db.flush()  # the job row must exist before events reference it
    add_event(db, job.id, f"Validating training file: {resolved.training_file.id}")
    if resolved.validation_file:
        add_event(db, job.id, f"Validating validation file: {resolved.validation_file.id}")
    # Files were validated line by line at upload, so here only their existence and format matter.
    job.status = QUEUED
    add_event(db, job.id, "Files validated, moving job to queued state")
    db.commit()  # before enqueueing: a fast worker must find the row
    try:
        queue.enqueue_job(job.id)
    except Exception as err:  # the broker is down: the job stays queued, the reaper re-sends it
        log.warning("could not enqueue %s: %s", job.id, err)
        add_event(db, job.id, "The job queue could not be reached; the job stays queued and "
                              "will be sent again automatically.", level="warn")
        db.commit()
    return FineTuningJob.from_row(job)


def _metadata_filters(request: Request) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query parameters."""
    found = {}
    for name, value in request.query_params.items():
        if m := _METADATA_QUERY.match(name):
            found[m.group(1)] = value
    return found


@router.get("", response_model=ListObject[FineTuningJob])
def list_jobs(request: Request, db: DB, after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ListObject[FineTuningJob]:
    stmt = select(JobRow)
    for key, value in _metadata_filters(request).items():
        stmt = stmt.where(JobRow.metadata_[key].as_string() == value)
    rows, has_more = paginate(db, stmt, JobRow, after=after, limit=limit)
    return ListObject.page([FineTuningJob.from_row(r) for r in rows], has_more)


@router.get("/{fine_tuning_job_id}", response_model=FineTuningJob)
def retrieve_job(db: DB, fine_tuning_job_id: str) -> FineTuningJob:
    return FineTuningJob.from_row(get_job(db, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
def cancel_job(db: DB, fine_tuning_job_id: str) -> FineTuningJob:
    # Locked so that the worker cannot mark the job succeeded between our check and our write.
    job = get_job(db, fine_tuning_job_id, for_update=True)
    if job.status in TERMINAL:
        raise APIError(409, f"Job {job.id!r} is already {job.status}; only an unfinished job can be "
                            "cancelled.", param="fine_tuning_job_id", code="job_not_cancellable")
    # The worker polls the row between steps and stops when it sees `cancelled`.
    job.status, job.finished_at = CANCELLED, now()
    add_event(db, job.id, "Job cancelled")
    db.commit()
    return FineTuningJob.from_row(job)
