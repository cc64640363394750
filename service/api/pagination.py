"""Cursor pagination the OpenAI way: `after=<id of the last item you saw>`, `limit`, `has_more`.

Rows are ordered by their integer `seq` (insertion order), never by timestamps, which collide
within a second. The cursor is a public id; we look up its `seq` within the same listing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from service.api.errors import bad_request


def paginate(db: Session, stmt: Select, model: Any, *, after: str | None, limit: int,
             newest_first: bool = True) -> tuple[list[Any], bool]:
    """Apply cursor, order and limit to `stmt` (a select of `model` rows, already filtered).

    Returns (rows, has_more). An `after` id that is not in this listing is a 400, not an empty
    page, so a client bug does not look like the end of the data.
    """
    if after is not None:
        # Filtering through the same statement keeps the cursor inside this listing (same job...).
        cursor = db.scalar(stmt.with_only_columns(model.seq).where(model.id == after))
        if cursor is None:
            raise bad_request(f"No such object for cursor 'after': {after!r}", param="after")
        stmt = stmt.where(model.seq < cursor if newest_first else model.seq > cursor)
    stmt = stmt.order_by(model.seq.desc() if newest_first else model.seq.asc()).limit(limit + 1)
    rows = list(db.scalars(stmt))
    return rows[:limit], len(rows) > limit
