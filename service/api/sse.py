"""Server-sent events for `GET /v1/fine_tuning/jobs/{id}/events?stream=true`.

Protocol. Each event goes out as `id: <event id>`, `event: <type>`, `data: <event JSON>`, oldest
first; a comment `: keep-alive` when the stream was quiet for `sse_keepalive_seconds` (proxies close
idle connections); the stream ends once the job is finished, no live worker holds it any more (a
cancelled job's worker writes its last events after the cancel), and every event was sent. A client
that reconnects sends `Last-Event-ID` and continues after it.

Cost scales with jobs, not with clients. Per API process and job there is one `JobWatch`: a task
that polls the database every `sse_poll_seconds` (the job's status and its events after the last
one seen, one indexed query on (job_id, seq)), formats each new event once, keeps the last
`RING` frames, and wakes its subscribers. N streams of one job cost one poll per interval, not N.
A subscriber sends frames from the ring; one that starts further back (a resume, a job with a
long history) or falls behind the ring (a slow client) catches up with its own reads until it
reaches the ring. The watch stops when its last subscriber leaves.

Streams never touch the request pool. The request that opens a stream releases its session
before streaming (routes/job_outputs.py); every stream read (polls and catch-ups) goes through
a separate engine of `sse_db_connections` connections, run in worker threads behind a limiter
of the same size, so they neither hold request connections nor take FastAPI's thread pool.

Per key, at most `sse_max_streams_per_key` streams are open in one API process; beyond that a
stream request is answered 429 in the error envelope (`EventStreamResponse`).

Graceful shutdown: uvicorn waits for open responses before it exits, and a stream of a job that
runs for hours would hold it up. `install_shutdown_hook` chains onto uvicorn's SIGTERM/SIGINT
handlers and sets SHUTDOWN, which ends every watch, and so every stream, at its next poll.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator

import anyio
from sqlalchemy import select
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.errors import APIError
from service.api.limits import Slots, refuse
from service.api.schemas import Event
from service.shared.settings import Settings
from service.shared.store.models import TERMINAL, EventRow, JobRow
from service.shared.store.session import session_factory

log = logging.getLogger(__name__)

SHUTDOWN = threading.Event()
BATCH = 200  # events per read
RING = 1000  # frames a watch keeps for its subscribers
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


Frame = tuple[int, str]  # (seq, formatted event)


class StreamReads:
    """The database reads of one process's streams: their own small pool, their own threads."""

    def __init__(self, db_url: str, connections: int):
        self.db_url, self.connections = db_url, max(1, connections)
        self.limiter = anyio.CapacityLimiter(self.connections)

    def _read(self, job_id: str, after_seq: int, with_status: bool) -> tuple[str | None, list[Frame]]:
        with session_factory(self.db_url, pool_size=self.connections, max_overflow=0)() as s:
            # Status before events: a terminal status read first guarantees its events are visible.
            status = None
            if with_status:
                row = s.execute(select(JobRow.status, JobRow.lease_owner, JobRow.lease_expires_at)
                                .where(JobRow.id == job_id)).first()
                status = _stream_status(row)
            rows = s.scalars(select(EventRow).where(EventRow.job_id == job_id, EventRow.seq > after_seq)
                             .order_by(EventRow.seq.asc()).limit(BATCH))
            return status, [(row.seq, format_event(row)) for row in rows]

    async def poll(self, job_id: str, after_seq: int) -> tuple[str | None, list[Frame]]:
        return await anyio.to_thread.run_sync(self._read, job_id, after_seq, True, limiter=self.limiter)

    async def events(self, job_id: str, after_seq: int) -> list[Frame]:
        return (await anyio.to_thread.run_sync(self._read, job_id, after_seq, False, limiter=self.limiter))[1]


def _stream_status(row) -> str | None:
    """The job's status as a stream sees it: a terminal job that a live worker still holds (a
    cancel the worker has not reached yet) is still writing events, so it counts as running."""
    if row is None:
        return None
    status, owner, expires = row
    if status in TERMINAL and owner is not None and (expires or 0) > time.time():
        return "stopping"
    return status


class JobWatch:
    """One job, watched once for all of this process's subscribers (see the module docstring)."""

    def __init__(self, reads: StreamReads, job_id: str, after_seq: int, poll_seconds: float):
        self.reads, self.job_id, self.poll_seconds = reads, job_id, poll_seconds
        self.seqs: list[int] = []  # the ring: seqs[i] is the seq of frames[i], ascending
        self.frames: list[str] = []
        self.floor = after_seq  # the ring holds every event after this seq
        self.ended = False  # the job is finished and every event is in the ring (or shutdown)
        self.subscribers = 0
        self.polls = 0
        self._changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next change; take it before looking at the state, then wait on it."""
        return self._changed

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else self.floor

    def after(self, seq: int) -> list[Frame]:
        """Ring frames after `seq` (the caller has seq >= floor)."""
        i = bisect.bisect_right(self.seqs, seq)
        return list(zip(self.seqs[i:], self.frames[i:]))

    def _publish(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _add(self, frames: list[Frame]) -> None:
        for seq, frame in frames:
            self.seqs.append(seq)
            self.frames.append(frame)
        if len(self.seqs) > RING:
            cut = len(self.seqs) - RING
            self.floor = self.seqs[cut - 1]
            del self.seqs[:cut], self.frames[:cut]

    async def run(self) -> None:
        settled = 0
        try:
            while not SHUTDOWN.is_set():
                try:
                    status, frames = await self.reads.poll(self.job_id, self.last_seq)
                except Exception as err:  # a database blip: the streams stay open and poll again
                    log.warning("event stream of %s: poll failed: %s", self.job_id, err)
                    await anyio.sleep(self.poll_seconds)
                    continue
                self.polls += 1
                if frames:
                    self._add(frames)
                    self._publish()
                if status is None or status in TERMINAL:
                    settled = 0 if frames else settled + 1
                    if settled >= _SETTLE_POLLS:
                        return
                if len(frames) < BATCH:  # a full batch: more are waiting, read on at once
                    await anyio.sleep(self.poll_seconds)
        finally:
            self.ended = True
            self._publish()

    async def follow(self, after_seq: int, keepalive_seconds: float) -> AsyncIterator[str]:
        """One subscriber's frames after `after_seq`, then the end once the watch has ended."""
        sent = after_seq
        while True:
            changed = self.changed
            if sent < self.floor:  # behind the ring: read what it no longer holds
                floor = self.floor
                frames = await self.reads.events(self.job_id, sent)
                for seq, frame in frames:
                    yield frame
                    sent = seq
                if len(frames) < BATCH:
                    # Everything up to the floor that exists was read; a gap is deleted rows (a
                    # job restarted from scratch drops its metric events).
                    sent = max(sent, floor)
                continue
            frames = self.after(sent)
            for seq, frame in frames:
                yield frame
                sent = seq
            if frames:
                continue
            if self.ended:
                return
            try:
                await asyncio.wait_for(changed.wait(), keepalive_seconds)
            except TimeoutError:
                yield ": keep-alive\n\n"


class StreamHub:
    """This process's watches (one per job) and its stream count per key. Lives on one event loop,
    so it needs no lock."""

    def __init__(self, settings: Settings):
        self.reads = StreamReads(settings.database_url, settings.sse_db_connections)
        self.watches: dict[str, JobWatch] = {}
        self.slots = Slots()

    def subscribe(self, job_id: str, after_seq: int, poll_seconds: float) -> JobWatch:
        watch = self.watches.get(job_id)
        if watch is None or watch.ended:
            watch = self.watches[job_id] = JobWatch(self.reads, job_id, after_seq, poll_seconds)
            watch.task = asyncio.get_running_loop().create_task(watch.run())
        watch.subscribers += 1
        return watch

    def unsubscribe(self, watch: JobWatch) -> None:
        watch.subscribers -= 1
        if watch.subscribers == 0:
            if watch.task is not None:
                watch.task.cancel()
            if self.watches.get(watch.job_id) is watch:
                del self.watches[watch.job_id]


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def hub(settings: Settings) -> StreamHub:
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = StreamHub(settings)
    return found


class EventStreamResponse(StreamingResponse):
    """The live stream of one job for one caller: admitted against the caller's stream limit, fed
    by the job's watch, and always counted out again, however the connection ends."""

    def __init__(self, caller_key: str, job_id: str, after_seq: int, settings: Settings):
        super().__init__(iter(()), media_type="text/event-stream", headers=sse_headers())
        self.caller_key, self.job_id, self.after_seq, self.settings = caller_key, job_id, after_seq, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streams = hub(self.settings)
        limit = self.settings.sse_max_streams_per_key
        if streams.slots.take(self.caller_key, limit):
            err = APIError(429, f"Too many open event streams: at most {limit} per API key. Close one "
                                "or poll the events list instead.", type="requests",
                           code="too_many_event_streams", headers={"retry-after": "5"})
            await refuse(err, scope, receive, send)
            return
        watch = streams.subscribe(self.job_id, self.after_seq, self.settings.sse_poll_seconds)
        try:
            self.body_iterator = self._body(watch)
            await super().__call__(scope, receive, send)
        finally:
            streams.unsubscribe(watch)
            streams.slots.give(self.caller_key)

    async def _body(self, watch: JobWatch) -> AsyncIterator[str]:
        poll = self.settings.sse_poll_seconds
        yield f"retry: {int(max(poll, 1) * 1000)}\n\n"  # how long a client waits to reconnect
        async for frame in watch.follow(self.after_seq, self.settings.sse_keepalive_seconds):
            yield frame


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
