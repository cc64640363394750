"""How the workers survive database blips (a Postgres restart, a failover, a dropped connection).

Policy (docs/architecture.md, "Failure behaviour"):
- Every write the worker makes is one short transaction, so a blip never leaves half a write.
- A write that fails with a *transient* error (the server is unreachable, the connection was cut)
  is retried with exponential backoff (0.2 s doubling to 2 s) for up to RLHF_DB_RETRY_SECONDS
  (default 60 s). Training waits meanwhile, so no step's metrics are lost.
- If the database is still unreachable after that, `StoreUnavailable` is raised: the run stops
  without a verdict (it cannot write one), its lease lapses, and once the database is back a
  reaper requeues the job, which resumes from its last checkpoint (bounded by RLHF_MAX_ATTEMPTS).
- Status polls (`should_stop`) and heartbeats never raise: a failed poll means "keep training",
  a failed heartbeat is retried sooner than usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from service.shared.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The database stayed unreachable for longer than the retry budget."""


def is_transient(err: BaseException) -> bool:
    if isinstance(err, (OperationalError, InterfaceError)):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def with_retry(fn: Callable[[], T], what: str, seconds: float | None = None) -> T:
    """fn() (one transaction), retried on transient errors for up to `seconds`."""
    budget = get_settings().db_retry_seconds if seconds is None else seconds
    deadline = time.monotonic() + budget
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(f"database unreachable for {budget:.0f}s while trying to {what}: "
                                       f"{type(err).__name__}") from err
            log.warning("database unavailable (%s: %s); retrying %s in %.1fs", type(err).__name__,
                        str(err).splitlines()[0] if str(err) else "", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
