"""Soak benchmark: mixed traffic against the real stack for a fixed time while workers train and
one is killed every minute, then a check that nothing was lost.

    python -m bench.service_soak [--minutes 10] [--streams 200]

The stack: throwaway Postgres and Redis (tests/infra.py), uvicorn with 2 processes, every request
with an API key, two Celery workers training tiny-random-llama. Traffic, all on loopback, every
loop bounded by the deadline:
- status polls and event pages at fixed rates on the jobs made so far;
- `--streams` live event streams, each reopened on another unfinished job when its job ends;
- uploads, one every few seconds, some over the upload limit (413 expected), a few at once
  (429 expected beyond the per-key limit);
- job creations every few seconds, a third of them cancelled after a random delay;
- every `--kill-every` seconds worker 1's process group gets SIGKILL (a lost machine) and is
  started again; its running job is reaped after the lease and resumed by a worker.
After the deadline the traffic stops, every job is waited for, and the store is checked:
- every job ended, once: a terminal status and exactly one event saying so;
- every step's metrics: a succeeded job has one train metric row and one metrics event for each
  step 1..steps_completed;
- every event there: each stream that followed its job to the end got every event the store
  holds for it, in order;
- no file without its bytes: each file row has its bytes (size and sha256), each accepted upload
  has its row, and no partial upload is left in the spool.
Reports p50/p99 per route, answers by status code, the API's peak RSS, and the losses.
Writes bench/results/service_soak.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.service_latency import PeakRss, follow_stream, percentile  # noqa: E402
from service.admin import create_key, create_project  # noqa: E402
from service.shared.store.models import TERMINAL, EventRow, FileRow, JobRow, MetricRow  # noqa: E402
from service.shared.store.session import session_scope  # noqa: E402
from tests import infra  # noqa: E402

UPLOAD_LIMIT = 4 * 2**20
PAIR = {"input": {"messages": [{"role": "user", "content": "Say something short about the sea."}]},
        "preferred_output": [{"role": "assistant", "content": "The sea is wide."}],
        "non_preferred_output": [{"role": "assistant", "content": "Well, the sea, you know, it is big."}]}


def dataset(n_bytes: int) -> bytes:
    line = (json.dumps(PAIR) + "\n").encode()
    return line * max(1, n_bytes // len(line))


class Workers:
    """Two Celery workers, each in its own process group so that a kill takes its children too."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.procs, self.kills = env, log_dir, [None, None], 0

    def start(self, i: int) -> None:
        log = open(self.log_dir / f"worker-{i}.log", "ab")
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=WARNING",
             "--concurrency", "1", "--hostname", f"soak-{i}-{uuid.uuid4().hex[:6]}@%h"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, i: int) -> None:
        try:
            os.killpg(self.procs[i].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs[i].wait()
        self.kills += 1

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


class Traffic:
    """The clients: every coroutine loops until the deadline, at a fixed pace."""

    def __init__(self, api_url: str, key: str, deadline: float, streams: int, create_every: float):
        self.url, self.key, self.deadline, self.n_streams = api_url, key, deadline, streams
        self.create_every = create_every
        self.client = httpx.AsyncClient(base_url=api_url, timeout=60, headers={"authorization": f"Bearer {key}"},
                                        limits=httpx.Limits(max_connections=64))
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, Counter] = defaultdict(Counter)
        self.jobs: list[str] = []
        self.files: dict[str, str] = {}  # file id -> sha256 of what was sent
        self.small_file = ""
        self.streams_done: list[tuple[str, list[str]]] = []  # (job, ids) of streams that saw their job end
        self.stream_failures = 0

    async def call(self, route: str, method: str, path: str, **kw) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await self.client.request(method, path, **kw)
        except httpx.HTTPError as err:
            self.codes[route][type(err).__name__] += 1
            return None
        self.latency[route].append(time.perf_counter() - started)
        self.codes[route][r.status_code] += 1
        return r

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def paced(self, interval: float, fn) -> None:
        next_at = time.monotonic()
        while self.running():
            await fn()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def poll_status(self) -> None:
        if self.jobs:
            await self.call("GET job", "GET", f"/v1/fine_tuning/jobs/{random.choice(self.jobs)}")

    async def event_page(self) -> None:
        if self.jobs:
            await self.call("GET events page", "GET", f"/v1/fine_tuning/jobs/{random.choice(self.jobs)}/events",
                            params={"limit": 50})

    async def upload(self) -> None:
        size = random.choice([2_000, 200_000, 1_000_000, 3_000_000, UPLOAD_LIMIT + 200_000])
        data = dataset(size)
        r = await self.call("POST file", "POST", "/v1/files", files={"file": ("d.jsonl", data)},
                            data={"purpose": "fine-tune"})
        if r is not None and r.status_code == 200:
            self.files[r.json()["id"]] = hashlib.sha256(data).hexdigest()

    async def uploads(self) -> None:
        await self.paced(4.0, lambda: asyncio.gather(*(self.upload() for _ in range(random.choice([1, 1, 3])))))

    async def create_and_maybe_cancel(self) -> None:
        body = {"model": "tiny-random-llama", "training_file": self.small_file,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}}}
        r = await self.call("POST job", "POST", "/v1/fine_tuning/jobs", json=body)
        if r is None or r.status_code != 200:
            return
        job_id = r.json()["id"]
        self.jobs.append(job_id)
        if random.random() < 1 / 3:
            asyncio.get_running_loop().call_later(random.uniform(0.5, 20), lambda: asyncio.ensure_future(
                self.call("POST cancel", "POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")))

    async def stream_slot(self, i: int) -> None:
        """One of the live streams: follows a job to its end, then takes another."""
        await asyncio.sleep(i * 0.02)
        while self.running():
            job_id = random.choice(self.jobs[-8:]) if self.jobs else None
            if job_id is None:
                await asyncio.sleep(1)
                continue
            stop, opened = asyncio.Event(), asyncio.Event()
            started = time.perf_counter()
            task = asyncio.create_task(follow_stream(self.url, f"/v1/fine_tuning/jobs/{job_id}/events?stream=true",
                                                     self.key, opened, stop))
            await opened.wait()
            self.latency["GET events stream (open)"].append(time.perf_counter() - started)
            while not task.done() and self.running():
                await asyncio.wait([task], timeout=1)
            stop.set()
            ids, ended = await task
            if ids is None:
                self.stream_failures += 1
                self.codes["GET events stream (open)"]["failed"] += 1
            else:
                self.codes["GET events stream (open)"][200] += 1
                if ended:
                    self.streams_done.append((job_id, ids))

    async def run(self, workers: Workers, kill_every: float) -> None:
        async def killer():
            while self.running():
                await asyncio.sleep(min(kill_every, max(0.0, self.deadline - time.monotonic())))
                if self.running():
                    await asyncio.to_thread(workers.kill, 0)
                    await asyncio.sleep(2)
                    workers.start(0)

        await asyncio.gather(self.paced(1 / 20, self.poll_status), self.paced(1 / 5, self.event_page),
                             self.uploads(), self.paced(self.create_every, self.create_and_maybe_cancel), killer(),
                             *(self.stream_slot(i) for i in range(self.n_streams)))
        await self.client.aclose()


def wait_for_jobs(database: str, jobs: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(database) as s:
            open_ = s.scalar(select(func.count()).select_from(JobRow).where(JobRow.id.in_(jobs),
                                                                           JobRow.status.not_in(TERMINAL)))
        if not open_:
            return
        time.sleep(2)


def check(database: str, artifacts: Path, traffic: Traffic) -> dict:
    """What was lost: each count should be 0."""
    lost, missed = Counter(), Counter()
    with session_scope(database) as s:
        jobs = list(s.scalars(select(JobRow).where(JobRow.id.in_(traffic.jobs))))
        statuses = Counter(job.status for job in jobs)
        for job in jobs:
            events = list(s.scalars(select(EventRow).where(EventRow.job_id == job.id).order_by(EventRow.seq)))
            if job.status not in TERMINAL:
                lost["jobs not ended"] += 1
                continue
            ends = {"succeeded": [e for e in events if e.message.startswith("The job has successfully completed")],
                    "cancelled": [e for e in events if e.message == "Job cancelled"],
                    "failed": [e for e in events if e.level == "error"]}[job.status]
            lost["jobs not ended exactly once"] += len(ends) != 1
            if job.status == "succeeded":
                steps = list(range(1, job.steps_completed + 1))
                rows = sorted(s.scalars(select(MetricRow.step).where(MetricRow.job_id == job.id,
                                                                     MetricRow.kind == "train")))
                metric_events = sorted(e.data.get("step") for e in events if e.type == "metrics"
                                       and (e.data or {}).get("kind", "train") == "train")
                lost["steps without their metrics row"] += rows != steps
                lost["steps without their metrics event"] += metric_events != steps
                lost["succeeded jobs with no steps"] += not steps
        stored = {job_id: list(s.scalars(select(EventRow).where(EventRow.job_id == job_id).order_by(EventRow.seq)))
                  for job_id in {j for j, _ in traffic.streams_done}}
        for job_id, ids in traffic.streams_done:
            got = set(ids)
            missing = [e for e in stored[job_id] if e.id not in got]
            lost["streams missing an event"] += bool(missing)
            missed.update(e.message[:40] for e in missing)
        files = list(s.scalars(select(FileRow)))
    for row in files:
        path = artifacts / row.storage_key
        ok = (path.is_file() and path.stat().st_size == row.bytes
              and hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256)
        lost["files without their bytes"] += not ok
    by_id = {row.id: row for row in files}
    lost["accepted uploads without their row"] += sum(
        fid not in by_id or by_id[fid].sha256 != digest for fid, digest in traffic.files.items())
    lost["partial uploads left in the spool"] += len(list((artifacts / "files" / ".incoming").glob("*")))
    return {"jobs": len(jobs), "statuses": dict(statuses), "streams_followed_to_the_end": len(traffic.streams_done),
            "files": len(files), "lost": dict(lost), "total_lost": sum(lost.values()),
            "missed_events": dict(missed.most_common(10))}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--kill-every", type=float, default=60)
    parser.add_argument("--create-every", type=float, default=6, help="seconds between job creations")
    args = parser.parse_args()

    servers = [infra.PostgresServer().start(), infra.RedisServer().start()]
    admin, redis = servers[0].admin_url, servers[1].url
    database = infra.create_database(admin)
    infra.run_migrations(database)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    create_project(database, "soak")
    _, key = create_key(database, "soak")
    settings = dict(database_url=database, broker_url=redis, artifacts_dir=tmp / "artifacts",
                    model_cache_dir=tmp / "models", queue=f"soak-{uuid.uuid4().hex[:8]}", lease_seconds=10,
                    # A killed worker takes the messages it had prefetched with it; the reaper sends
                    # such queued jobs again after this (default 900 s, longer than this benchmark).
                    resend_queued_seconds=30,
                    max_upload_bytes=UPLOAD_LIMIT, max_concurrent_jobs_per_project=0, rate_limit_per_minute=0,
                    sse_max_streams_per_key=args.streams + 50)
    api = infra.ApiServer(tmp, workers=2, **settings).start()
    workers = Workers(infra.service_env(**settings), tmp)
    started = time.time()
    try:
        for i in (0, 1):
            workers.start(i)
        with httpx.Client(base_url=api.url, timeout=60, headers={"authorization": f"Bearer {key}"}) as c:
            small = c.post("/v1/files", files={"file": ("s.jsonl", dataset(2_000))}, data={"purpose": "fine-tune"})
        rss = PeakRss(api.proc.pid)
        rss.start()
        traffic = Traffic(api.url, key, time.monotonic() + args.minutes * 60, args.streams, args.create_every)
        traffic.small_file = small.json()["id"]
        traffic.files[traffic.small_file] = hashlib.sha256(dataset(2_000)).hexdigest()
        asyncio.run(traffic.run(workers, args.kill_every))
        peak_rss = rss.stop()
        wait_for_jobs(database, traffic.jobs, timeout=600)
        result = check(database, tmp / "artifacts", traffic)
    finally:
        workers.stop()
        api.stop()
        infra.drop_database(admin, database)
        for server in servers:
            server.stop()

    routes = {route: {"requests": len(lat), "p50_ms": round(1000 * percentile(lat, 0.5), 1),
                      "p99_ms": round(1000 * percentile(lat, 0.99), 1)}
              for route, lat in sorted(traffic.latency.items())}
    report = {"command": " ".join(["python -m bench.service_soak", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
              "minutes": args.minutes, "streams": args.streams, "worker_kills": workers.kills,
              "wall_s": round(time.time() - started), "api_peak_rss_mb": round(peak_rss / 2**20),
              "routes": routes, "codes": {r: {str(k): v for k, v in c.items()} for r, c in traffic.codes.items()},
              "stream_failures": traffic.stream_failures, **result}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_soak.json").write_text(json.dumps(report, indent=1) + "\n")
    md = [f"# Service soak (`{report['command']}`)", "",
          f"{args.minutes:g} min of mixed traffic, {args.streams} live streams, 2 API processes, 2 workers "
          f"(worker 1 SIGKILLed and restarted {workers.kills} times), {os.cpu_count()} cores shared by everything. "
          f"API peak RSS (largest process): {report['api_peak_rss_mb']} MB.", "",
          "| route | requests | p50 ms | p99 ms | answers |", "|---|---|---|---|---|",
          *(f"| {route} | {r['requests']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(report['codes'][route].items()))} |"
            for route, r in routes.items()), "",
          f"Jobs: {result['jobs']} ({', '.join(f'{k} {v}' for k, v in sorted(result['statuses'].items()))}); "
          f"files: {result['files']}; streams followed to their job's end: {result['streams_followed_to_the_end']}; "
          f"stream failures: {traffic.stream_failures}.", "",
          "| lost | count |", "|---|---|",
          *(f"| {name} | {count} |" for name, count in sorted(result["lost"].items())),
          f"| **total** | **{result['total_lost']}** |"]
    (out / "service_soak.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if result["total_lost"] == 0 and traffic.stream_failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
