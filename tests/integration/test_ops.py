"""Operations: /healthz, /readyz (503 naming the failing dependency), Prometheus /metrics, JSON
access logs with request ids, early refusal of oversized bodies."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
from sqlalchemy import select

from service.shared.store.models import JobRow, MetricRow
from tests.infra import free_port
from tests.integration.helpers import assert_envelope, dpo_body, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def client(idle_api):
    with httpx.Client(base_url=idle_api.url, timeout=30) as c:
        yield c


def metric(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(want)}[^}}]*}} (\S+)$", text, re.M) if labels else \
        re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}  # Postgres and Redis


def test_readyz_names_the_broker_when_it_is_down(start_api, tmp_path):
    server = start_api(database_url=f"sqlite:///{tmp_path}/r.db", broker_url=f"redis://127.0.0.1:{free_port()}/0",
                       artifacts_dir=str(tmp_path / "artifacts"))
    started = time.monotonic()
    r = httpx.get(f"{server.url}/readyz", timeout=30)
    assert time.monotonic() - started < 10  # short timeouts, no hanging probe
    assert_envelope(r, 503, param="broker", code="dependency_unavailable")
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the process itself is fine


def test_prometheus_metrics(client, idle_db, idle_api, redis_url):
    import redis

    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(upload(client).json()["id"])).json()["id"]
    idle_db.rollback()
    idle_db.scalar(select(JobRow).where(JobRow.id == job_id)).status = "running"  # as a worker would
    idle_db.add(MetricRow(job_id=job_id, step=1, kind="train", values={"step_time": 9.0, "tokens_per_second": 3.0}))
    idle_db.add(MetricRow(job_id=job_id, step=2, kind="train", values={"step_time": 2.5, "tokens_per_second": 123.0}))
    idle_db.commit()
    try:
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert metric(text, "rlhf_jobs", status="running") >= 1
        assert metric(text, "rlhf_jobs", status="paused") is not None
        assert metric(text, "rlhf_job_step_seconds", job_id=job_id) == 2.5  # the latest step
        assert metric(text, "rlhf_job_tokens_per_second", job_id=job_id) == 123.0
        depth = redis.Redis.from_url(redis_url).llen(idle_api.settings["queue"])
        assert metric(text, "rlhf_queue_depth", queue=idle_api.settings["queue"]) == depth > 0
        before = metric(text, "rlhf_http_requests_total", method="GET", route="/healthz", status="200") or 0
        client.get("/healthz")
        after = client.get("/metrics").text
        assert metric(after, "rlhf_http_requests_total", method="GET", route="/healthz", status="200") == before + 1
        # Route templates, never raw ids, so the label set stays bounded.
        assert not [line for line in after.splitlines() if line.startswith("rlhf_http") and job_id in line]
        assert metric(after, "rlhf_http_request_duration_seconds_count", method="GET", route="/healthz") >= 1
    finally:
        client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_json_logs_with_request_ids(client, idle_api):
    r = client.get("/v1/files/file-nope", headers={"x-request-id": "trace-42.a"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "trace-42.a"
    generated = client.get("/healthz", headers={"x-request-id": "not/sane;" * 20}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)  # an insane incoming id is replaced
    time.sleep(0.3)
    lines = [json.loads(line) for line in idle_api.log().splitlines() if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("request_id") == "trace-42.a"]
    assert mine, idle_api.log()[-2000:]
    access = mine[-1]
    assert (access["method"], access["path"], access["status"], access["level"]) == \
        ("GET", "/v1/files/file-nope", 404, "info")
    assert isinstance(access["duration_ms"], float) and access["ts"] and access["msg"]


def test_oversized_bodies_are_refused_early(client, idle_db):
    from sqlalchemy import func

    from service.shared.store.models import FileRow

    idle_db.rollback()
    before = idle_db.scalar(select(func.count()).select_from(FileRow))
    # Content-Length alone decides: the server answers before a byte of the 10 GiB body is sent.
    port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 10737418240\r\n\r\n")
        head = b""
        while b"file_too_large" not in head and (chunk := sock.recv(65536)):  # headers and body may come apart
            head += chunk
        head = head.decode()
    assert head.startswith("HTTP/1.1 413") and "file_too_large" in head, head
    assert_envelope(client.post("/v1/fine_tuning/jobs", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                headers={"content-type": "application/json"}), 413, code="body_too_large")
    idle_db.rollback()
    assert idle_db.scalar(select(func.count()).select_from(FileRow)) == before
