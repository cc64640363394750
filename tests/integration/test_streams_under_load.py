"""Live event streams at scale: many streams of one job cost one database watch per API process,
hold no request connections, leave status reads fast, deliver every event to every stream, and
a key's streams are capped (429 in the envelope)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import psycopg
import pytest
from sqlalchemy import select

from service.api.sse import parse_frames
from service.shared.store.models import EventRow, JobRow, new_id
from service.shared.store.session import session_scope
from tests.integration.helpers import dpo_body, upload
from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration

STREAMS = 60
EVENTS = 20


async def read_stream(url: str, path: str, headers: dict, opened: asyncio.Event | None = None) -> bytes:
    """One raw HTTP/1.1 stream, read to its end (cheap enough to run dozens in one loop)."""
    parsed = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {parsed.host}\r\n{head}Connection: close\r\n\r\n".encode())
    status_line = await reader.readline()
    if opened is not None:
        opened.set()
    body = await reader.read()  # chunked framing stays in: frames are found by their text
    writer.close()
    return status_line + body


def database_stats(database_url: str) -> int:
    """Transactions committed in the API's database so far (one per stream poll, before the fix)."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def connections_in_use(database_url: str) -> int:
    """Connections inside a transaction: checked out of a pool (idle pooled ones are not)."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND state <> 'idle'").fetchone()[0]


def test_many_streams_of_one_job_one_watch_fast_status_every_event(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, sse_poll_seconds=0.2,
                        sse_max_streams_per_key=STREAMS + 10, rate_limit_per_minute=0)
    db_url = server.settings["database_url"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(upload(client).json()["id"])).json()["id"]
        path = f"/v1/fine_tuning/jobs/{job_id}/events?stream=true"
        results: list = []
        all_open = threading.Event()

        def streams():
            async def main():
                opened = [asyncio.Event() for _ in range(STREAMS)]
                tasks = [asyncio.create_task(read_stream(server.url, path, {}, o)) for o in opened]
                await asyncio.gather(*(o.wait() for o in opened))
                all_open.set()
                results.extend(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60))
            asyncio.run(main())

        thread = threading.Thread(target=streams)
        thread.start()
        assert all_open.wait(30), "the streams did not open"
        time.sleep(0.5)  # every stream is past its first read

        # Sixty open streams hold no request connections (before: one each, until the pool ran out)
        # and cost one poll per interval between them, not sixty.
        assert connections_in_use(db_url) <= 2
        before = database_stats(db_url)
        time.sleep(2.0)
        polls = database_stats(db_url) - before
        assert polls < 40, f"{polls} transactions in 2 s with {STREAMS} streams open on one job"

        # Status reads stay fast while the streams are open and events arrive.
        latencies, ours = [], [new_id("ftevent") for _ in range(EVENTS + 1)]
        for i in range(EVENTS):
            with session_scope(db_url) as s:
                s.add(EventRow(id=ours[i], job_id=job_id, message=f"Step {i}", type="metrics", data={"step": i}))
            started = time.perf_counter()
            assert client.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
            latencies.append(time.perf_counter() - started)
        assert max(latencies) < 1.0, latencies
        with session_scope(db_url) as s:
            s.scalar(select(JobRow).where(JobRow.id == job_id)).status = "cancelled"
            s.add(EventRow(id=ours[-1], job_id=job_id, message="Job cancelled"))
        thread.join(60)
        assert not thread.is_alive()

        expected = [e["id"] for e in client.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                                                params={"limit": 1000}).json()["data"][::-1]]
    assert len(results) == STREAMS
    for result in results:
        assert isinstance(result, bytes), result  # no stream broke
        assert result.startswith(b"HTTP/1.1 200"), result[:200]
        # Chunked framing: frames may be split across chunks only at chunk borders, which the
        # server puts between frames; drop the size lines and read the frames.
        text = "\n".join(line for line in result.decode().split("\r\n") if not _is_chunk_size(line))
        assert [f["id"] for f in parse_frames(text)] == expected  # every event, once, in order
    assert expected[-len(ours):] == ours  # the job's own events first, then ours


def _is_chunk_size(line: str) -> bool:
    try:
        int(line, 16)
        return True
    except ValueError:
        return False


def test_a_keys_streams_are_capped_with_429(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, sse_max_streams_per_key=2,
                        sse_keepalive_seconds=0.3, rate_limit_per_minute=0)
    a, b = make_tenant(server), make_tenant(server)
    with a.client(server) as ca, b.client(server) as cb:
        job_a = ca.post("/v1/fine_tuning/jobs", json=dpo_body(upload(ca).json()["id"])).json()["id"]
        job_b = cb.post("/v1/fine_tuning/jobs", json=dpo_body(upload(cb).json()["id"])).json()["id"]
        url = f"/v1/fine_tuning/jobs/{job_a}/events"
        with ca.stream("GET", url, params={"stream": "true"}) as one, \
                ca.stream("GET", url, params={"stream": "true"}) as two:
            assert one.status_code == two.status_code == 200
            refused = ca.get(url, params={"stream": "true"})
            assert refused.status_code == 429 and refused.headers["retry-after"]
            assert refused.json()["error"] | {"message": None} == {
                "message": None, "type": "requests", "param": None, "code": "too_many_event_streams"}
            assert ca.get(url).status_code == 200  # the events list is not a stream
            with cb.stream("GET", f"/v1/fine_tuning/jobs/{job_b}/events", params={"stream": "true"}) as other:
                assert other.status_code == 200  # another key has its own count
        # Closed streams give their slots back (noticed at the next keep-alive at the latest).
        deadline = time.monotonic() + 10
        while True:
            with ca.stream("GET", url, params={"stream": "true"}) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closed streams never gave their slots back"
            time.sleep(0.3)
