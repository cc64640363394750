"""Alembic environment: runs migrations online against RLHF_DATABASE_URL (or the URL that
service.migrate put in the config)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from service.shared.settings import get_settings
from service.shared.store.models import Base
from service.shared.store.session import get_engine, normalise_url

config = context.config
if config.config_file_name and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return normalise_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def run_migrations_online() -> None:
    url = _url()
    # The service's own engine: same driver choice and SQLite pragmas, and it creates the SQLite
    # file's directory on first use.
    with get_engine(url).connect() as connection:
        sqlite = url.startswith("sqlite")
        if sqlite:
            # A batch migration rebuilds a table by dropping the old one; with foreign keys on, that
            # drop deletes every row pointing at it (ON DELETE CASCADE: a job's events, metrics and
            # checkpoints). SQLite applies this pragma only outside a transaction, hence here.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables when later migrations need it.
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
