"""Bring the database schema to the latest migration: `python -m service.migrate`.

Reads RLHF_DATABASE_URL like the service. Postgres deployments run this once per upgrade (the
API refuses to start on an old schema); with SQLite the API runs it itself at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.shared.settings import get_settings
from service.shared.store.session import get_engine, normalise_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats "%" as interpolation; URL-encoded passwords contain it.
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    # Leave logging to the caller (uvicorn, or main() below) instead of alembic.ini's fileConfig.
    cfg.attributes["skip_logging_config"] = True
    return cfg


def upgrade(url: str | None = None) -> None:
    command.upgrade(alembic_config(url or get_settings().database_url), "head")


def is_current(url: str) -> bool:
    """True when the database is at the newest revision."""
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    upgrade()


if __name__ == "__main__":
    main()
