"""A real Celery worker process for the end-to-end tests, on the session's Postgres and Redis."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import infra
from tests.integration.helpers import upload


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def worker(service_settings: dict, model_cache_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    """`celery -A worker.celery_app worker`: prefork, one job per fresh child, like production."""
    log_path = tmp_path_factory.mktemp("worker-logs") / "worker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO",
         "--hostname", f"test-worker-{service_settings['queue']}@%h"],
        cwd=infra.REPO, env=infra.service_env(**service_settings, model_cache_dir=model_cache_dir, lease_seconds=20),
        stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    infra.stop(proc, timeout=20)


@pytest.fixture
def client(idle_api):
    """A client of the idle API: no worker consumes its queue, so jobs stay queued while we look."""
    with httpx.Client(base_url=idle_api.url, timeout=30) as c:
        yield c


@pytest.fixture
def file_id(client) -> str:
    return upload(client).json()["id"]
