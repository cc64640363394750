"""Service benchmark: status-polling latency at a fixed offered rate, job-creation latency, and
upload validation throughput, against a real uvicorn API on real Postgres and Redis.

    python -m bench.service_latency [--rate 200] [--seconds 60] [--upload-mb 100]

Open-loop load: request i is due at t0 + i / rate whatever earlier responses did, and its latency
is measured from that due time, so a stalled server cannot hide queueing (no coordinated
omission). Client and server share this machine's cores. Postgres and Redis come from
RLHF_TEST_DATABASE_URL / RLHF_TEST_REDIS_URL or are started as throwaway servers (tests/infra.py).
Writes bench/results/service_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.admin import create_key, create_project  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--sweep", default="50,100,150", help="lower offered rates also measured "
                        "(req/s, comma-separated, '' for none): where the server stops keeping up")
    parser.add_argument("--sweep-seconds", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--creates", type=int, default=100)
    parser.add_argument("--upload-mb", type=float, default=100)
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
                          queue=f"bench-{uuid.uuid4().hex[:8]}", rate_limit_per_minute=10**9).start()
    try:
        client = httpx.Client(base_url=api.url, timeout=300, headers={"authorization": f"Bearer {key}"})
        small = preference_jsonl(2000)
        file_id = client.post("/v1/files", files={"file": ("p.jsonl", small)}, data={"purpose": "fine-tune"}).json()["id"]
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

        big = preference_jsonl(int(args.upload_mb * 1024 * 1024))
        started = time.perf_counter()
        response = client.post("/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"})
        upload_seconds = time.perf_counter() - started
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
        "job_creation": {"requests": args.creates, "p50_ms": ms(percentile(create_latencies, 0.5)),
                         "p99_ms": ms(percentile(create_latencies, 0.99)),
                         "mean_ms": ms(statistics.mean(create_latencies))},
        "upload_validation": {"megabytes": round(len(big) / 2**20, 1), "seconds": round(upload_seconds, 2),
                              "mb_per_s": round(len(big) / 2**20 / upload_seconds, 1)},
    }
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_latency.json").write_text(json.dumps(report, indent=1) + "\n")
    s, c, u = report["status_polling"], report["job_creation"], report["upload_validation"]
    md = [f"# Service latency (`{report['command']}`)", "",
          f"Machine: {platform.platform()}, {os.cpu_count()} cores shared by client and server; "
          f"{args.workers} uvicorn process(es); every request carries an API key.", "",
          "| measurement | value | target |", "|---|---|---|",
          f"| GET /v1/fine_tuning/jobs/{{id}} p50 at {args.rate:.0f} req/s for {args.seconds:.0f}s | {s['p50_ms']} ms | |",
          f"| same, p99 | {s['p99_ms']} ms | < 20 ms |",
          f"| same, errors | {s['errors']} of {s['requests']} | 0 |",
          *(f"| same at {r['offered_rate']:.0f} req/s for {r['seconds']:.0f}s: p50 / p99 / errors | "
            f"{r['p50_ms']} / {r['p99_ms']} ms / {r['errors']} | |" for r in sweep),
          f"| POST /v1/fine_tuning/jobs p50 / p99 ({args.creates} sequential) | {c['p50_ms']} / {c['p99_ms']} ms | |",
          f"| upload validation, {u['megabytes']} MB multi-turn preference JSONL | {u['mb_per_s']} MB/s ({u['seconds']} s) | |"]
    (out / "service_latency.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
