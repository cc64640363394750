"""The engine's Reporter, writing to the store: events, per-step metrics, checkpoints, samples.

Every write is its own short transaction so the API sees progress live, and is retried through
database blips (service/shared/dbretry.py). Metrics are keyed by (job, step, kind) and overwritten on
replay, so a job resumed after a crash never shows a step twice; an evaluation's samples replace
that step's and every later step's (a replay rewrites them all, in step order).

Writes of metrics and checkpoints are fenced on the lease: they commit only while this worker
still owns the job. A worker whose lease was taken over (it was presumed dead) stops at its next
step without having written anything over its successor's rows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

from sqlalchemy import delete, select, update

from service.shared.artifacts import ArtifactStore, ArtifactStoreUnavailable
from service.shared.dbretry import StoreUnavailable, is_transient, with_retry
from service.shared.events import EventKind, EventLevel, add_event
from service.shared.store.models import RUNNING, CheckpointRow, JobRow, MetricRow, SampleRow, new_id
from service.shared.store.session import session_scope
from worker.openai_metrics import with_openai_names

log = logging.getLogger(__name__)

# Set in a worker child when its worker is shutting down (worker/celery_app.py forwards SIGTERM's
# warm shutdown as SIGUSR2): the run stops at the next step, checkpoints and is handed back.
SHUTDOWN = threading.Event()


def write_event(db_url: str, job_id: str, message: str, *, kind: EventKind = "message", level: EventLevel = "info",
                data: dict | None = None) -> None:
    """One event in its own transaction, waiting out a database blip (dbretry.py)."""
    def write():
        with session_scope(db_url) as s:
            add_event(s, job_id, message, kind=kind, level=level, data=data)

    with_retry(write, "write an event")


def _clean(values: dict) -> dict:
    """Numbers only; NaN/inf become null (JSON has no NaN, and Postgres refuses it)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v) if math.isfinite(v) else None
    return out


class _LeaseLost(Exception):
    pass


class DbReporter:
    def __init__(self, db_url: str, job_id: str, store: ArtifactStore, heartbeat=None,
                 stop_poll_seconds: float = 0.5, owner: str | None = None):
        self.db_url, self.job_id, self.store = db_url, job_id, store
        self.heartbeat = heartbeat
        self.owner = owner if owner is not None else getattr(heartbeat, "owner", None)
        self.stop_poll_seconds = stop_poll_seconds
        self._last_poll, self._stop = 0.0, False
        self.stop_reason: str | None = None
        self.last_step = 0

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, body, what: str) -> None:
        """One fenced transaction, retried through blips. A non-transient failure of a metric or
        event write is logged and dropped: observability must not kill a training run."""

        def attempt():
            with session_scope(self.db_url) as s:
                if self.owner is not None:
                    held = s.execute(update(JobRow).where(JobRow.id == self.job_id, JobRow.lease_owner == self.owner)
                                     .values(lease_owner=self.owner)).rowcount  # also locks the row
                    if held != 1:
                        raise _LeaseLost
                body(s)

        try:
            with_retry(attempt, what)
        except _LeaseLost:
            self._stop, self.stop_reason = True, "lease_lost"
        except StoreUnavailable:
            raise
        except Exception as err:
            if is_transient(err):
                raise
            log.exception("job %s: could not %s; continuing", self.job_id, what)

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        def body(s):
            add_event(s, self.job_id, message, level=level, data=data)

        self._write(body, "write an event")

    def metrics(self, step: int, values: dict[str, float], *, total_steps: int | None = None) -> None:
        values = _clean(values)
        kind = "eval" if values and all(k.startswith("eval/") for k in values) else "train"

        def body(s):
            s.execute(delete(MetricRow).where(MetricRow.job_id == self.job_id, MetricRow.step == step,
                                              MetricRow.kind == kind))
            s.add(MetricRow(job_id=self.job_id, step=step, kind=kind, values=values))
            if kind == "train":
                s.execute(update(JobRow).where(JobRow.id == self.job_id)
                          .values(steps_completed=step, **({"total_steps": total_steps} if total_steps else {})))
                of = f"/{total_steps}" if total_steps else ""
                loss = values.get("loss")
                message = f"Step {step}{of}: training loss={loss if loss is None else format(loss, '.4f')}"
            else:
                loss = values.get("eval/loss")
                message = f"Step {step}: validation loss={loss if loss is None else format(loss, '.4f')}"
            add_event(s, self.job_id, message, kind="metrics",
                      data={**with_openai_names(step, values), "kind": kind,
                            **({"total_steps": total_steps} if total_steps else {})})

        self._write(body, f"record step {step}'s metrics")
        if kind == "train":
            self.last_step = step

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        key = Path(path).resolve().relative_to(self.store.root).as_posix()
        try:
            self.store.publish_dir(key)
        except ArtifactStoreUnavailable as err:
            # Only a checkpoint every machine can read gets a row (rows are what resume and the API
            # use), so this one is skipped; training goes on and the next checkpoint tries again.
            log.warning("job %s: checkpoint at step %d not stored in the bucket: %s", self.job_id, step, err)
            message = f"Checkpoint at step {step} could not be stored in the artifact store; not recorded"
            self._write(lambda s: add_event(s, self.job_id, message, kind="checkpoint_skipped", level="warn",
                                            data={"step": step}), "write an event")
            return

        def body(s):
            s.execute(delete(CheckpointRow).where(CheckpointRow.job_id == self.job_id,
                                                  CheckpointRow.step_number == step))
            s.add(CheckpointRow(id=new_id("ftckpt"), job_id=self.job_id, step_number=step,
                                metrics=with_openai_names(step, _clean(metrics)), storage_key=key))
            add_event(s, self.job_id, f"Checkpoint saved at step {step}", kind="checkpoint", data={"step": step})

        self._write(body, f"record the checkpoint at step {step}")

    def samples(self, step: int, items: list[dict]) -> None:
        """An evaluation's replies (rlhf_engine/samples.py). Rows of this step and any later one go
        first: they can only be an earlier attempt's, which this replay is rewriting, and the
        listing's order (insertion, GET .../samples) stays the order of the steps."""
        def body(s):
            s.execute(delete(SampleRow).where(SampleRow.job_id == self.job_id, SampleRow.step >= step))
            s.add_all(SampleRow(id=new_id("ftsample"), job_id=self.job_id, step=step, prompt_index=item["index"],
                                prompt=item["prompt"], completion=item["completion"], dialogue=item.get("dialogue"))
                      for item in items)
            who = "the base model" if step == 0 else f"step {step}"
            add_event(s, self.job_id, f"Samples of {who}: {len(items)} replies", kind="samples",
                      data={"step": step, "count": len(items)})

        self._write(body, f"record step {step}'s samples")

    # -- control ---------------------------------------------------------------------------------

    def should_stop(self) -> bool:
        """True once the job left `running` (cancelled, paused), our lease was taken over, or the
        worker is shutting down. A poll that fails on a database blip means "keep going"."""
        if self._stop:
            return True
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            self._stop, self.stop_reason = True, "lease_lost"
            return True
        if SHUTDOWN.is_set():
            self._stop, self.stop_reason = True, "shutdown"
            return True
        t = time.monotonic()
        if t - self._last_poll >= self.stop_poll_seconds:
            self._last_poll = t
            try:
                with session_scope(self.db_url) as s:
                    status = s.scalar(select(JobRow.status).where(JobRow.id == self.job_id))
            except Exception as err:
                if not is_transient(err):
                    raise
                log.warning("job %s: status poll failed (%s); continuing", self.job_id, type(err).__name__)
                return False
            if status != RUNNING:
                self._stop, self.stop_reason = True, status
        return self._stop
