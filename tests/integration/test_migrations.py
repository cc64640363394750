"""The Alembic migration creates exactly the tables of service/shared/store/models.py, on Postgres and
on SQLite (the embedded default), and running it twice is harmless."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.shared.store.models import Base
from service.shared.store.session import normalise_url
from tests import infra

pytestmark = pytest.mark.integration


def schema_differences(url: str) -> list:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_postgres_schema_matches_the_models(make_database):
    url = make_database()
    infra.run_migrations(url)
    infra.run_migrations(url)  # idempotent: already at head
    assert schema_differences(url) == []
    engine = create_engine(normalise_url(url))
    try:
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_schema_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path}/nested/rlhf.db"  # the directory does not exist yet
    infra.run_migrations(url)
    assert schema_differences(url) == []


def test_api_migrates_sqlite_by_itself(start_api, tmp_path):
    import httpx

    from tests.integration.helpers import upload

    server = start_api(database_url=f"sqlite:///{tmp_path}/embedded.db")
    with httpx.Client(base_url=server.url) as client:
        assert upload(client).status_code == 200
    assert schema_differences(f"sqlite:///{tmp_path}/embedded.db") == []


def test_api_refuses_an_unmigrated_postgres(make_database, service_settings, tmp_path):
    server = infra.ApiServer(tmp_path, **{**service_settings, "database_url": make_database()})
    with pytest.raises(RuntimeError, match="python -m service.migrate"):
        server.start(timeout=30)


def test_0006_keeps_old_jobs_and_events_readable(tmp_path):
    """Rows written before 0006: a job gets its model as base_model, a "warning" event becomes
    OpenAI's "warn" (the API's Literal level would refuse to serve it)."""
    from alembic import command
    from sqlalchemy import text

    from service.migrate import alembic_config

    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (id, project_id, model, training_file, status, method, seed, "
                              "created_at, steps_completed, attempts, export_merged) VALUES ('ftjob-old', "
                              "'default', 'tiny-random-llama', 'file-x', 'failed', '{}', 1, 0, 0, 0, 0)"))
            conn.execute(text("INSERT INTO job_events (id, job_id, created_at, level, message, type) VALUES "
                              "('ftevent-old', 'ftjob-old', 0, 'warning', 'lost', 'message')"))
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT base_model FROM jobs")).scalar() == "tiny-random-llama"
            assert conn.execute(text("SELECT level FROM job_events")).scalar() == "warn"
    finally:
        engine.dispose()
    assert schema_differences(url) == []


def test_0007_gives_old_events_their_kind(make_database):
    """Events written before 0007 get the kind their text always meant, so a job that crossed the
    upgrade keeps its count of lost workers (the reaper reads the kind now) and its checkpoints."""
    from alembic import command
    from sqlalchemy import text

    from service.migrate import alembic_config

    url = make_database()
    command.upgrade(alembic_config(url), "0006")
    old = {"Worker lost (1 of 3); job requeued to resume from its last checkpoint": ("message", "worker_lost"),
           "Checkpoint saved at step 4": ("message", "checkpoint"),
           "Step 4/8: training loss=0.6931": ("metrics", "metrics"),
           "Resuming from checkpoint at step 4 (attempt 2)": ("message", "resumed"),
           "Files validated, moving job to queued state": ("message", "status"),
           "Training dpo on 8 examples for 1 epoch(s)": ("message", "message")}
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (id, project_id, model, base_model, training_file, status, method, "
                              "seed, created_at, steps_completed, attempts, export_merged) VALUES ('ftjob-old', "
                              "'default', 'tiny-random-llama', 'tiny-random-llama', 'file-x', 'running', '{}', 1, 0, "
                              "0, 0, false)"))
            for i, (message, (type_, _)) in enumerate(old.items()):
                conn.execute(text("INSERT INTO job_events (id, job_id, created_at, level, message, type) VALUES "
                                  "(:id, 'ftjob-old', 0, 'info', :message, :type)"),
                             {"id": f"ftevent-{i}", "message": message, "type": type_})
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            kinds = dict(conn.execute(text("SELECT message, kind FROM job_events")).all())
    finally:
        engine.dispose()
    assert kinds == {message: kind for message, (_, kind) in old.items()}
    assert schema_differences(url) == []
