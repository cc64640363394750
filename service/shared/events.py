"""The one way a job event row is made, by the API and by the workers alike.

OpenAI's clients validate an event's `level` against exactly info/warn/error and its `type`
against message/metrics; a row with anything else breaks a strict client at read time, long
after the write. So the check is made here, when the row is built, and nowhere else.

Every event also has a `kind`: what it records, as data. The reaper counts a job's lost workers
by kind and the dashboard finds checkpoints by kind; nothing reads the message text, which is
for people and may change. OpenAI's `type` follows from the kind (metrics events are `metrics`,
every other is `message`), so it is never passed separately.
"""

from __future__ import annotations

from typing import Literal, get_args

from sqlalchemy.orm import Session

from rlhf_engine.callbacks import EVENT_LEVELS, EventLevel  # noqa: F401 (EventLevel is re-exported)
from service.shared.store.models import EventRow, new_id

EventType = Literal["message", "metrics"]
EventKind = Literal[
    "message",      # anything said along the way: the engine's notes, integrations, merging
    "status",       # the job moved: validated, queued, started, cancelled, paused, succeeded, failed
    "metrics",      # one step's metrics (`data` holds them, with OpenAI's keys)
    "checkpoint",   # a checkpoint was stored (`data.step`); `checkpoint_skipped` when it could not be
    "checkpoint_skipped",
    "resumed",      # a new attempt continues from a checkpoint (`data.step`, `data.attempt`)
    "requeued",     # the worker handed the job back (shutdown) or the queue was unreachable
    "worker_lost",  # the reaper found the job's lease lapsed (`data.lost`: how many times so far)
    "waiting",      # the project is at its concurrent-job limit; the job waits in `queued`
    "samples",      # an evaluation's samples were stored (`data.step`, `data.count`): GET .../samples
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


def new_event(job_id: str, message: str, *, kind: EventKind = "message", level: EventLevel = "info",
              data: dict | None = None) -> EventRow:
    """An unsaved `job_events` row; the caller adds it to its own transaction."""
    if level not in EVENT_LEVELS:
        raise ValueError(f"event level {level!r} is not one of {EVENT_LEVELS}")
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind {kind!r} is not one of {EVENT_KINDS}")
    return EventRow(id=new_id("ftevent"), job_id=job_id, level=level, message=message,
                    type="metrics" if kind == "metrics" else "message", kind=kind, data=data)


def add_event(session: Session, job_id: str, message: str, *, kind: EventKind = "message",
              level: EventLevel = "info", data: dict | None = None) -> None:
    """`new_event` added to `session`'s transaction."""
    session.add(new_event(job_id, message, kind=kind, level=level, data=data))
