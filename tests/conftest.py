"""Session-wide real infrastructure for the tests (started lazily, only when a test asks).

Fixtures (all session-scoped except `db`):

    postgres_admin_url  RLHF_TEST_DATABASE_URL (an existing server, admin rights to CREATE
                        DATABASE), else a throwaway PostgreSQL started from initdb/postgres.
    make_database       factory: make_database() -> URL of a brand-new empty database; every
                        database it made is dropped at the end. Other databases are never touched.
    postgres_url        one fresh database for the session (not migrated).
    migrated_db         postgres_url after `python -m service.migrate`; the URL.
    redis_url           RLHF_TEST_REDIS_URL, else a throwaway redis-server.
    s3_server           a throwaway S3-compatible server (moto's), an infra.S3Server.
    s3_settings         (per test) a fresh bucket on s3_server, as the RLHF_ARTIFACTS_S3_* settings
                        dict; also puts dummy AWS credentials in this process's environment, which
                        service_env passes on to every API and worker started by the test.
    service_settings    dict of RLHF_ settings shared by every service process of the session:
                        database_url, broker_url, artifacts_dir, queue (unique per session, so a
                        shared Redis never hands our tasks to someone else's worker).
    start_api           factory: start_api(**overrides) -> infra.ApiServer (`.url`, `.log()`),
                        a real `uvicorn service.app:app` with service_settings + overrides.
    api_server          base URL of the default API server (no /v1).
    idle_api            an infra.ApiServer (`.url`, `.settings`) with its own database, artifacts
                        dir and queue, none of which a worker fixture ever sees: its jobs stay
                        `queued` however the suite is ordered (the API-only tests use it).
    idle_db             a SQLAlchemy session on idle_api's database.
    db                  a SQLAlchemy session on migrated_db, to look at rows directly.

With CI set, a skipped test is reported as a failure (`pytest_runtest_makereport` below): in CI
nothing the suite needs may be missing, so a skip there means a broken install, not a choice.

A worker fixture starts the worker with the same settings:

    subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", ...],
                     env=infra.service_env(**service_settings), cwd=infra.REPO)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import infra


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped with CI set, where nothing the suite needs may be missing: {reason}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    given = os.environ.get("RLHF_TEST_DATABASE_URL")
    if given:
        yield given
        return
    server = infra.PostgresServer().start()
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(infra.create_database(postgres_admin_url))
        return made[-1]

    yield make
    for url in made:
        infra.drop_database(postgres_admin_url, url)


@pytest.fixture(scope="session")
def postgres_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture(scope="session")
def migrated_db(postgres_url: str) -> str:
    infra.run_migrations(postgres_url)
    return postgres_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("RLHF_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = infra.RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[infra.S3Server]:
    server = infra.S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_server: infra.S3Server, monkeypatch: pytest.MonkeyPatch) -> dict:
    for name, value in infra.S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return {"artifacts_s3_bucket": s3_server.create_bucket(), "artifacts_s3_prefix": "team-a/rlhf",
            "artifacts_s3_endpoint_url": s3_server.url, "artifacts_s3_region": infra.S3_TEST_ENV["AWS_DEFAULT_REGION"]}


@pytest.fixture(scope="session")
def service_settings(migrated_db: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {
        "database_url": migrated_db,
        "broker_url": redis_url,
        "artifacts_dir": str(tmp_path_factory.mktemp("artifacts")),
        "queue": f"rlhf-test-{uuid.uuid4().hex[:8]}",
    }


@pytest.fixture(scope="session")
def start_api(service_settings: dict,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., infra.ApiServer]]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    servers: list[infra.ApiServer] = []

    def start(**overrides: object) -> infra.ApiServer:
        servers.append(infra.ApiServer(log_dir, **{**service_settings, **overrides}).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def api_server(start_api: Callable[..., infra.ApiServer]) -> str:
    return start_api().url


@pytest.fixture(scope="session")
def idle_api(start_api: Callable[..., infra.ApiServer], make_database: Callable[[], str],
             service_settings: dict, tmp_path_factory: pytest.TempPathFactory) -> infra.ApiServer:
    # A separate database too: a worker's reaper re-sends whatever is queued in *its* database.
    database_url = make_database()
    infra.run_migrations(database_url)
    return start_api(database_url=database_url, queue=f"{service_settings['queue']}-idle",
                     artifacts_dir=str(tmp_path_factory.mktemp("idle-artifacts")))


def _session(url: str):
    from service.shared.store.session import session_factory

    session = session_factory(url)()
    try:
        yield session
    finally:
        session.close()


@pytest.fixture
def db(migrated_db: str):
    yield from _session(migrated_db)


@pytest.fixture
def idle_db(idle_api: infra.ApiServer):
    yield from _session(idle_api.settings["database_url"])
