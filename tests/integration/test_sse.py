"""`GET .../events?stream=true`: server-sent events through a real uvicorn, oldest first, resumable
with Last-Event-ID, closing when the job has finished, and ending on SIGTERM (graceful shutdown)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from service.api.sse import parse_frames
from service.shared.store.models import EventRow, JobRow, new_id
from tests.integration.helpers import assert_envelope, dpo_body, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def client(idle_api):
    with httpx.Client(base_url=idle_api.url, timeout=30) as c:
        yield c


def new_job(client) -> str:
    return client.post("/v1/fine_tuning/jobs", json=dpo_body(upload(client).json()["id"])).json()["id"]


def add_events(db, job_id: str, n: int, start: int = 0) -> None:
    db.add_all([EventRow(id=new_id("ftevent"), job_id=job_id, message=f"Step {i}", type="metrics",
                         data={"step": i}) for i in range(start, start + n)])
    db.commit()


def finish(db, job_id: str, status: str = "succeeded") -> None:
    db.rollback()
    db.scalar(select(JobRow).where(JobRow.id == job_id)).status = status
    db.commit()


def test_stream_of_a_finished_job_then_resume(client, idle_db):
    job_id = new_job(client)
    add_events(idle_db, job_id, 3)
    finish(idle_db, job_id)
    url = f"/v1/fine_tuning/jobs/{job_id}/events"

    r = client.get(url, params={"stream": "true"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = parse_frames(r.text)
    listed = client.get(url, params={"limit": 100}).json()["data"][::-1]  # the list is newest first
    assert [f["id"] for f in frames] == [e["id"] for e in listed]  # every event, oldest first
    assert [f["data"] for f in frames] == listed
    assert [f["event"] for f in frames][-3:] == ["metrics"] * 3 and frames[0]["event"] == "message"

    resumed = parse_frames(client.get(url, params={"stream": "true"},
                                      headers={"Last-Event-ID": frames[-3]["id"]}).text)
    assert [f["id"] for f in resumed] == [f["id"] for f in frames[-2:]]
    by_query = parse_frames(client.get(url, params={"stream": "true", "after": frames[-2]["id"]}).text)
    assert [f["id"] for f in by_query] == [frames[-1]["id"]]
    assert_envelope(client.get(url, params={"stream": "true"}, headers={"Last-Event-ID": "ftevent-nope"}),
                    400, param="Last-Event-ID")


def test_live_stream_follows_the_job_until_it_ends(client, idle_db, idle_api):
    job_id = new_job(client)

    def worker_writes():  # what a worker does, a little later: events, then a final status
        from service.shared.store.session import session_scope

        time.sleep(1.0)
        with session_scope(idle_api.settings["database_url"]) as s:
            add_events(s, job_id, 2)
        time.sleep(0.7)
        with session_scope(idle_api.settings["database_url"]) as s:
            s.scalar(select(JobRow).where(JobRow.id == job_id)).status = "cancelled"
            s.add(EventRow(id=new_id("ftevent"), job_id=job_id, message="Job cancelled"))

    thread = threading.Thread(target=worker_writes)
    started = time.monotonic()
    thread.start()
    with client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as r:
        body = "".join(r.iter_text())
    thread.join()
    messages = [f["data"]["message"] for f in parse_frames(body)]
    assert messages[-3:] == ["Step 0", "Step 1", "Job cancelled"]  # the last event after the status too
    assert time.monotonic() - started < 10


def test_keepalive_and_sigterm_end_open_streams(start_api, tmp_path):
    # Embedded stack (SQLite + kombu's SQLAlchemy transport): also shows /readyz checking that broker.
    server = start_api(database_url=f"sqlite:///{tmp_path}/sse.db", broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
                       artifacts_dir=str(tmp_path / "artifacts"), sse_keepalive_seconds=0.5)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/readyz").json() == {"status": "ready"}
        job_id = new_job(c)  # queued for ever: nobody consumes this broker
        received: list[str] = []
        with c.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as r:
            lines = r.iter_lines()
            for line in lines:
                received.append(line)
                if line.startswith(": keep-alive"):
                    break
            server.proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            received += list(lines)  # ends once the server stops the stream
        # Without the hook uvicorn would wait for the endless stream for ever. (It re-raises
        # SIGTERM after its graceful shutdown, hence -15.)
        assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM)
    assert time.monotonic() - stopped < 10
    assert any(line.startswith("data: ") for line in received)
