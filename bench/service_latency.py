"""Service benchmark: status-polling latency at a fixed offered rate (alone, and with N live event
streams of a job that is writing events), job-creation latency, and upload validation throughput,
against a real uvicorn API on real Postgres and Redis.

    python -m bench.service_latency [--rate 200] [--seconds 60] [--streams 30,200] [--upload-mb 100]

With streams: N clients follow `GET .../events?stream=true` of one job while a writer adds one
event to it every 0.5 s; status GETs run at `--rate` for `--stream-seconds`; a stream error is a
stream that failed to open, broke, or missed or repeated an event.

Open-loop load: request i is due at t0 + i / rate whatever earlier responses did, and its latency
is measured from that due time, so a stalled server cannot hide queueing (no coordinated
omission). Client and server share this machine's cores. Postgres and Redis come from
RLHF_TEST_DATABASE_URL / RLHF_TEST_REDIS_URL or are started as throwaway servers (tests/infra.py).
Writes bench/results/service_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from sqlalchemy import select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.admin import create_key, create_project  # noqa: E402
from service.shared.store.models import EventRow, new_id  # noqa: E402
from service.shared.store.session import session_scope  # noqa: E402
from tests import infra  # noqa: E402  (the same throwaway servers the tests use)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def preference_jsonl(target_bytes: int) -> bytes:
    """Multi-turn OpenAI-preference lines until the file reaches target_bytes."""
    lines, size, i = [], 0, 0
    while size < target_bytes:
        line = json.dumps({"input": {"messages": [
            {"role": "user", "content": f"Question {i}: " + "tell me about the weather " * 8},
            {"role": "assistant", "content": "It is sunny. " * 10},
            {"role": "user", "content": f"And tomorrow, case {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": "Rain is likely tomorrow. " * 4}],
            "non_preferred_output": [{"role": "assistant", "content": "I cannot know that. " * 5}]}) + "\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines).encode()


async def _get(reader, writer, host: str, path: str, key: str) -> int:
    """One keep-alive HTTP/1.1 GET; returns the status. (httpx's async pool spends O(n^2) CPU with
    thousands of pending requests, which made the client, not the server, the bottleneck.)"""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def open_loop(url: str, key: str, rate: float, seconds: float,
                    connections: int = 64) -> tuple[list[float], int]:
    """Request i is due at t0 + i / rate; `connections` keep-alive connections take due requests in
    order. Latency counts from the due time, so time spent waiting for a free connection counts."""
    parsed = httpx.URL(url)
    total = int(rate * seconds)
    latencies, errors, next_i = [], 0, 0
    t0 = time.perf_counter() + 0.5

    async def connection() -> None:
        nonlocal errors, next_i
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        while next_i < total:
            due = t0 + next_i / rate
            next_i += 1
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                if await asyncio.wait_for(_get(reader, writer, parsed.host, parsed.raw_path.decode(), key), 10) != 200:
                    errors += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
            latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, errors


_EVENT_ID = re.compile(rb"\nid: (ftevent-[0-9a-f]+)\n")


async def follow_stream(url: str, path: str, key: str, opened: asyncio.Event,
                        stop: asyncio.Event) -> tuple[list[str] | None, bool]:
    """Read one live stream until `stop` or its end: (the event ids it delivered, whether the
    server ended it), with None for the ids if it failed to open or broke."""
    parsed = httpx.URL(url)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(parsed.host, parsed.port), 30)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {parsed.host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        opened.set()
        return None, False
    opened.set()
    if not head.startswith(b"HTTP/1.1 200"):
        writer.close()
        return None, False
    buffer, ids = b"\n", []
    try:
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except asyncio.TimeoutError:
                continue
            if not data:  # closed: a finished stream ends with the last, empty chunk
                return (ids, True) if buffer.endswith(b"\r\n0\r\n\r\n") else (None, False)
            buffer += data
            cut = buffer.rfind(b"\n\n")
            if cut >= 0:
                ids += [m.decode() for m in _EVENT_ID.findall(buffer[:cut + 1])]
                buffer = buffer[cut:]
    except OSError:
        return None, False
    finally:
        writer.close()
    return ids, False


class PeakRss(threading.Thread):
    """The largest resident memory any process of a tree (the API: uvicorn and its workers) reaches
    while this runs, sampled every 10 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.done, self.peak = psutil.Process(pid), threading.Event(), 0

    def current(self) -> int:
        rss = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = max(rss, proc.memory_info().rss)
        return rss

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.01)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


class EventWriter(threading.Thread):
    """What a training worker does to a job's events: one more every `interval` seconds."""

    def __init__(self, database: str, job_id: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.database, self.job_id, self.interval = database, job_id, interval
        self.stop, self.written = threading.Event(), 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            with session_scope(self.database) as s:
                s.add(EventRow(id=new_id("ftevent"), job_id=self.job_id, message=f"Step {self.written}",
                               type="metrics", data={"step": self.written}))
            self.written += 1


async def polls_with_streams(api_url: str, key: str, job_id: str, streams: int, rate: float,
                             seconds: float, writer: EventWriter) -> tuple[list[float], int, list]:
    stop = asyncio.Event()
    opened = [asyncio.Event() for _ in range(streams)]
    path = f"/v1/fine_tuning/jobs/{job_id}/events?stream=true"
    tasks = [asyncio.create_task(follow_stream(api_url, path, key, o, stop)) for o in opened]
    await asyncio.gather(*(o.wait() for o in opened))
    latencies, errors = await open_loop(f"{api_url}/v1/fine_tuning/jobs/{job_id}", key, rate, seconds)
    writer.stop.set()
    await asyncio.sleep(5)  # the last events reach every stream
    stop.set()
    return latencies, errors, await asyncio.gather(*tasks)


def stream_run(api_url: str, key: str, database: str, job_id: str, streams: int, rate: float,
               seconds: float) -> dict:
    writer = EventWriter(database, job_id)
    writer.start()
    try:
        latencies, errors, delivered = asyncio.run(polls_with_streams(api_url, key, job_id, streams, rate, seconds,
                                                                      writer))
    finally:
        writer.stop.set()
        writer.join()
    with session_scope(database) as s:
        expected = list(s.scalars(select(EventRow.id).where(EventRow.job_id == job_id).order_by(EventRow.seq)))
    # Each stream started from the job's first event, so it must hold the job's events, once, in
    # order: all of them, or (a stream still catching up when the run stopped) a prefix of them.
    broken = sum(ids is None or ended or ids != expected[:len(ids)] for ids, ended in delivered)  # the job never ends
    behind = sum(ids is not None and ids == expected[:len(ids)] and len(ids) < len(expected) for ids, _ in delivered)
    return {"streams": streams, "offered_rate": rate, "seconds": seconds, "requests": len(latencies),
            "errors": errors, "p50_ms": round(1000 * percentile(latencies, 0.5), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2), "max_ms": round(1000 * max(latencies), 2),
            "stream_errors": broken, "streams_behind_at_the_end": behind, "events_written": writer.written}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--sweep", default="50,100,150", help="lower offered rates also measured "
                        "(req/s, comma-separated, '' for none): where the server stops keeping up")
    parser.add_argument("--sweep-seconds", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--upload-mb", type=float, default=100)
    parser.add_argument("--streams", default="30,200", help="live event streams open during a status run "
                        "(comma-separated, '' for none)")
    parser.add_argument("--stream-seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (one per core)")
    args = parser.parse_args()

    servers, cleanup = [], []
    admin = os.environ.get("RLHF_TEST_DATABASE_URL")
    if not admin:
        servers.append(infra.PostgresServer().start())
        admin = servers[-1].admin_url
    redis = os.environ.get("RLHF_TEST_REDIS_URL")
    if not redis:
        servers.append(infra.RedisServer().start())
        redis = servers[-1].url
    database = infra.create_database(admin)
    cleanup.append(lambda: infra.drop_database(admin, database))
    infra.run_migrations(database)
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    create_project(database, "bench")  # the production set-up: every request carries a key
    _, key = create_key(database, "bench")
    api = infra.ApiServer(tmp, workers=args.workers, database_url=database, broker_url=redis,
                          artifacts_dir=tmp / "artifacts",
                          queue=f"bench-{uuid.uuid4().hex[:8]}", rate_limit_per_minute=10**9,
                          sse_max_streams_per_key=10_000).start()
    try:
        client = httpx.Client(base_url=api.url, timeout=300, headers={"authorization": f"Bearer {key}"})
        small = preference_jsonl(2000)
        file_id = client.post("/v1/files", files={"file": ("p.jsonl", small)},
                              data={"purpose": "fine-tune"}).json()["id"]
        body = {"model": "tiny-random-llama", "training_file": file_id,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}}

        create_latencies = []
        for _ in range(args.creates):
            started = time.perf_counter()
            response = client.post("/v1/fine_tuning/jobs", json=body)
            create_latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        job_id = response.json()["id"]

        status_url = f"{api.url}/v1/fine_tuning/jobs/{job_id}"
        sweep = []
        for rate in [float(r) for r in args.sweep.split(",") if r.strip()]:
            lat, err = asyncio.run(open_loop(status_url, key, rate, args.sweep_seconds))
            sweep.append({"offered_rate": rate, "seconds": args.sweep_seconds, "requests": len(lat), "errors": err,
                          "p50_ms": round(1000 * percentile(lat, 0.5), 2),
                          "p99_ms": round(1000 * percentile(lat, 0.99), 2)})
        latencies, errors = asyncio.run(open_loop(status_url, key, args.rate, args.seconds))
        with_streams = []
        for n in [int(x) for x in args.streams.split(",") if x.strip()]:
            stream_job = client.post("/v1/fine_tuning/jobs", json=body).json()["id"]  # queued: no worker here
            with_streams.append(stream_run(api.url, key, database, stream_job, n, args.rate, args.stream_seconds))

        big = preference_jsonl(int(args.upload_mb * 1024 * 1024))
        rss = PeakRss(api.proc.pid)
        rss_before = rss.current()
        rss.start()
        started = time.perf_counter()
        response = client.post("/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"})
        upload_seconds = time.perf_counter() - started
        rss_peak = rss.stop()
        rss_after = rss.current()
        assert response.status_code == 200, response.text[:500]
    finally:
        api.stop()
        for fn in cleanup:
            fn()
        for server in servers:
            server.stop()

    ms = lambda s: round(1000 * s, 2)  # noqa: E731
    report = {
        "command": " ".join(["python -m bench.service_latency", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "status_polling": {"offered_rate": args.rate, "seconds": args.seconds, "requests": len(latencies),
                           "errors": errors, "p50_ms": ms(percentile(latencies, 0.5)),
                           "p99_ms": ms(percentile(latencies, 0.99)), "max_ms": ms(max(latencies)),
                           "api_processes": args.workers, "lower_rates": sweep},
        "status_polling_with_streams": with_streams,
        "job_creation": {"requests": args.creates, "p50_ms": ms(percentile(create_latencies, 0.5)),
                         "p99_ms": ms(percentile(create_latencies, 0.99)),
                         "mean_ms": ms(statistics.mean(create_latencies))},
        "upload_validation": {"megabytes": round(len(big) / 2**20, 1), "seconds": round(upload_seconds, 2),
                              "mb_per_s": round(len(big) / 2**20 / upload_seconds, 1),
                              "api_rss_mb_before": round(rss_before / 2**20),
                              "api_rss_mb_peak": round(rss_peak / 2**20),
                              "api_rss_mb_after": round(rss_after / 2**20)},
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_latency.json").write_text(json.dumps(report, indent=1) + "\n")
    s, c, u = report["status_polling"], report["job_creation"], report["upload_validation"]
    md = [f"# Service latency (`{report['command']}`)", "",
          f"Machine: {platform.platform()}, {os.cpu_count()} cores shared by client and server; "
          f"{args.workers} uvicorn process(es); every request carries an API key.", "",
          "| measurement | value | target |", "|---|---|---|",
          f"| GET /v1/fine_tuning/jobs/{{id}} p50 at {args.rate:.0f} req/s for {args.seconds:.0f}s | "
          f"{s['p50_ms']} ms | |",
          f"| same, p99 | {s['p99_ms']} ms | < 20 ms |",
          f"| same, errors | {s['errors']} of {s['requests']} | 0 |",
          *(f"| same at {r['offered_rate']:.0f} req/s for {r['seconds']:.0f}s: p50 / p99 / errors | "
            f"{r['p50_ms']} / {r['p99_ms']} ms / {r['errors']} | |" for r in sweep),
          *(f"| same at {r['offered_rate']:.0f} req/s for {r['seconds']:.0f}s with {r['streams']} live streams: "
            f"p50 / p99 / errors / stream errors (behind at the end) | {r['p50_ms']} / {r['p99_ms']} ms / "
            f"{r['errors']} of {r['requests']} / {r['stream_errors']} of {r['streams']} "
            f"({r['streams_behind_at_the_end']}) | p99 < 20 ms, 0, 0 |" for r in with_streams),
          f"| POST /v1/fine_tuning/jobs p50 / p99 ({args.creates} sequential) | {c['p50_ms']} / {c['p99_ms']} ms | |",
          f"| upload validation, {u['megabytes']} MB multi-turn preference JSONL | "
          f"{u['mb_per_s']} MB/s ({u['seconds']} s) | |",
          f"| same, API process RSS before / peak / after | {u['api_rss_mb_before']} / {u['api_rss_mb_peak']} / "
          f"{u['api_rss_mb_after']} MB | flat |"]
    (out / "service_latency.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
