"""The one way a job event row is made, by the API and by the workers alike.

OpenAI's clients validate an event's `level` against exactly info/warn/error and its `type`
against message/metrics; a row with anything else breaks a strict client at read time, long
after the write. So the check is made here, when the row is built, and nowhere else.
"""

from __future__ import annotations

from typing import Literal, get_args

from rlhf_engine.callbacks import EVENT_LEVELS, EventLevel
from service.shared.store.models import EventRow, new_id

EventType = Literal["message", "metrics"]


def new_event(job_id: str, message: str, *, level: EventLevel = "info", type: EventType = "message",
              data: dict | None = None) -> EventRow:
    """An unsaved `job_events` row; the caller adds it to its own transaction."""
    if level not in EVENT_LEVELS:
        raise ValueError(f"event level {level!r} is not one of {EVENT_LEVELS}")
    if type not in get_args(EventType):
        raise ValueError(f"event type {type!r} is not one of {get_args(EventType)}")
    return EventRow(id=new_id("ftevent"), job_id=job_id, level=level, message=message, type=type, data=data)
