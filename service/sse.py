"""Server-sent events for `GET /v1/fine_tuning/jobs/{id}/events?stream=true`.

Each event goes out as `id: <event id>`, `event: <type>`, `data: <event JSON>`, oldest first. The
generator polls the database every `sse_poll_seconds` (one indexed query on (job_id, seq), in a
worker thread so the event loop never blocks), sends a keep-alive comment when it has been quiet
for `sse_keepalive_seconds` (proxies close idle connections), and ends once the job is finished
and every event was sent. A client that reconnects sends `Last-Event-ID` and continues after it.

Graceful shutdown: uvicorn waits for open responses before it exits, and a stream of a job that
runs for hours would hold it up. `install_shutdown_hook` chains onto uvicorn's SIGTERM/SIGINT
handlers and sets SHUTDOWN, which ends every stream at its next poll.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import AsyncIterator

import anyio
from sqlalchemy import select

from service.schemas import Event
from service.store.models import TERMINAL, EventRow, JobRow
from service.store.session import session_scope

SHUTDOWN = threading.Event()
BATCH = 200
# After the job turned terminal, wait for this many empty polls: the worker writes its last event
# just after the final status, and a stream must not close between the two.
_SETTLE_POLLS = 2


def install_shutdown_hook() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            SHUTDOWN.set()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(0)

        signal.signal(sig, handler)


def format_event(row: EventRow) -> str:
    data = Event.from_row(row).model_dump_json()
    return f"id: {row.id}\nevent: {row.type}\ndata: {data}\n\n"


def _poll(db_url: str, job_id: str, after_seq: int) -> tuple[str | None, list[EventRow]]:
    with session_scope(db_url) as s:
        status = s.scalar(select(JobRow.status).where(JobRow.id == job_id))  # read before the events
        rows = list(s.scalars(select(EventRow).where(EventRow.job_id == job_id, EventRow.seq > after_seq)
                              .order_by(EventRow.seq.asc()).limit(BATCH)))
    return status, rows


async def event_stream(db_url: str, job_id: str, after_seq: int, poll_seconds: float,
                       keepalive_seconds: float) -> AsyncIterator[str]:
    yield f"retry: {int(max(poll_seconds, 1) * 1000)}\n\n"  # how long a client waits to reconnect
    last_sent, settled = time.monotonic(), 0
    while not SHUTDOWN.is_set():
        status, rows = await anyio.to_thread.run_sync(_poll, db_url, job_id, after_seq)
        for row in rows:
            after_seq = row.seq
            yield format_event(row)
        if rows:
            last_sent = time.monotonic()
        if status is None or status in TERMINAL:
            settled = 0 if rows else settled + 1
            if settled >= _SETTLE_POLLS:
                return
        if len(rows) == BATCH:
            continue  # more are waiting: no sleep
        if time.monotonic() - last_sent >= keepalive_seconds:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(poll_seconds)


def sse_headers() -> dict[str, str]:
    # no-transform/X-Accel-Buffering: proxies (nginx) must not buffer or compress the stream.
    return {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def parse_frames(text: str) -> list[dict]:
    """Client side, for tests and scripts: the `id`/`event`/`data` frames in an SSE body."""
    frames = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            frames.append({"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])})
    return frames
