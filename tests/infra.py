"""Real servers for the tests: PostgreSQL, Redis, an S3-compatible store (moto's server) and the
API itself, as child processes.

Used by tests/conftest.py's fixtures; usable on its own too. Every process started here is
stopped by the object that started it. Nothing here touches a database it did not create.

    service_env(database_url=..., broker_url=...)  ->  os.environ + RLHF_DATABASE_URL=...
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**overrides: object) -> dict[str, str]:
    """The environment for a service process (API or worker): this process's environment plus
    `RLHF_<NAME>` for each keyword (`database_url=...` -> `RLHF_DATABASE_URL`)."""
    env = dict(os.environ)
    env.update({f"RLHF_{name.upper()}": str(value) for name, value in overrides.items() if value is not None})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- PostgreSQL ----------------------------------------------------------------------------------

def _pg_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; set RLHF_TEST_DATABASE_URL instead")
    return found


class PostgresServer:
    """A throwaway cluster in a temp dir: trust auth, fsync off, unix socket kept in the dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self) -> list[str]:
        # initdb and postgres refuse to run as root; the tests usually do (containers, CI).
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        if not data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            subprocess.run([*self._as_postgres(), _pg_binary("initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--no-sync"],
                           check=True, capture_output=True)
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [*self._as_postgres(), _pg_binary("postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: psycopg.connect(self.admin_url, connect_timeout=1).close() or True,
                   30, "postgres", self.proc)
        return self

    def halt(self, timeout: float = 30) -> None:
        """Stop the server but keep its data (a fast shutdown: open sessions are cut, like a crash
        or a failover looks to clients). `start()` brings it back on the same port and data."""
        if self.proc is None or self.proc.poll() is not None:
            return
        # Signal the postmaster itself: `runuser` (when running as root) does not forward SIGINT.
        pid_file = self.dir / "data" / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # SIGINT = fast shutdown
        except (OSError, ValueError, IndexError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        wait_until(lambda: not pid_file.exists(), timeout, "postgres shutdown")

    def restart(self, down_seconds: float = 0.0) -> "PostgresServer":
        self.halt()
        time.sleep(down_seconds)
        return self.start()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # SIGTERM = smart shutdown; our clients are gone by now
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(admin_url: str, prefix: str = "rlhf_test") -> str:
    """CREATE a fresh, uniquely named database and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _replace_dbname(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = url.partition("://")[2].partition("/")[2].partition("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _replace_dbname(url: str, name: str) -> str:
    head, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    query = path.partition("?")[2]
    return f"{head}://{authority}/{name}" + (f"?{query}" if query else "")


# ---- Redis ---------------------------------------------------------------------------------------

class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed; set RLHF_TEST_REDIS_URL instead")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _redis_ping(self.port), 15, "redis", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def restart(self, down_seconds: float = 0.0) -> "RedisServer":
        """Stop and start again on the same port. No persistence: queued messages are lost, as
        with a broker that restarts without its data."""
        self.stop()
        time.sleep(down_seconds)
        return self.start()


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


# ---- S3 (moto's standalone server) ---------------------------------------------------------------

# moto accepts any credentials; boto3 still wants some, from the same chain as in production.
S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-never-logged",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """`python -m moto.server`: a real S3-compatible HTTP server, state in memory, on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: httpx.get(self.url, timeout=1).status_code < 500, 30, "moto s3 server", self.proc)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=S3_TEST_ENV["AWS_DEFAULT_REGION"],
                            aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self) -> str:
        name = f"rlhf-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


# ---- the API -------------------------------------------------------------------------------------

class ApiServer:
    """`uvicorn service.app:app` in a child process, on a free port, with the given RLHF_ settings."""

    def __init__(self, log_dir: Path, workers: int = 1, **settings: object) -> None:
        self.port = free_port()
        self.workers = workers
        self.settings = settings
        self.log_path = Path(log_dir) / f"api-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ApiServer":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning",
             # The server keeps an idle connection longer than httpx's pool does (5 s): with equal
             # timeouts a request sent as the server closes the connection is reset (ECONNRESET).
             "--timeout-keep-alive", "30",
             *(["--workers", str(self.workers)] if self.workers > 1 else [])],
            cwd=REPO, env=service_env(**self.settings), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200,
                       timeout, "api server", self.proc)
        except Exception as err:
            stop(self.proc)
            raise RuntimeError(f"{err}\n--- {self.log_path} ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def run_migrations(database_url: str) -> None:
    """`python -m service.migrate`, exactly as README and docker-compose run it."""
    done = subprocess.run([sys.executable, "-m", "service.migrate"], cwd=REPO, text=True,
                          env=service_env(database_url=database_url), capture_output=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"python -m service.migrate failed:\n{done.stdout}{done.stderr}")
