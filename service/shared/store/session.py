"""Engine and session factory, one per process, built from RLHF_DATABASE_URL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (psycopg2 is not a dependency)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache
def get_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """The process's engine for `url`. Another pool size is another engine with its own pool: the
    event streams read through one of their own (service/api/sse.py), never the requests' pool."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=dumps_json)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _):  # WAL lets the API read while the worker writes
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # connect_timeout: a database that is down must fail requests (and /readyz) fast, not hang them.
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
                         connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
                         json_serializer=dumps_json)


def finite(value):
    """`value` with every NaN and infinity replaced by None, at any depth. A metric can be
    undefined (sign agreement when every pair ties); JSON has no NaN, Postgres refuses the
    token, and a strict client cannot parse it, so it is stored as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps_json(value) -> str:
    """Every JSON column's serializer (events' data, job results, metrics, checkpoints)."""
    return json.dumps(finite(value), allow_nan=False)


def session_factory(url: str, **pool: int) -> sessionmaker[Session]:
    return _sessionmaker_for(get_engine(url, **pool))


@lru_cache
def _sessionmaker_for(engine: Engine) -> sessionmaker[Session]:
    # One factory per engine: building one per request costs more than the query it serves (the
    # API's hot path). Keyed by the engine, not the URL, so that a forked worker child, which drops
    # the parent's engine (worker/celery_app.py), never gets a factory bound to the parent's pool.
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
