"""The engine's Reporter, writing to the store: events, per-step metrics, checkpoints.

Every write is its own short transaction so the API sees progress live. Metrics are keyed by
(job, step, kind) and overwritten on replay, so a job resumed after a crash never shows a step twice.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete, select, update

from service.artifacts import ArtifactStore
from service.store.models import RUNNING, CheckpointRow, EventRow, JobRow, MetricRow, new_id
from service.store.session import session_scope


def add_event(db_url: str, job_id: str, message: str, *, level: str = "info", type: str = "message",
              data: dict | None = None) -> None:
    with session_scope(db_url) as s:
        s.add(EventRow(id=new_id("ftevent"), job_id=job_id, level=level, message=message, type=type, data=data))


def _clean(values: dict) -> dict:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


class DbReporter:
    def __init__(self, db_url: str, job_id: str, store: ArtifactStore, checkpoint_model_name: str, heartbeat=None,
                 stop_poll_seconds: float = 0.5):
        self.db_url, self.job_id, self.store = db_url, job_id, store
        self.checkpoint_model_name = checkpoint_model_name
        self.heartbeat = heartbeat
        self.stop_poll_seconds = stop_poll_seconds
        self._last_poll, self._stop = 0.0, False
        self.stop_reason: str | None = None

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        add_event(self.db_url, self.job_id, message, level=level, data=data)

    def metrics(self, step: int, values: dict[str, float], *, total_steps: int | None = None) -> None:
        values = _clean(values)
        kind = "eval" if values and all(k.startswith("eval/") for k in values) else "train"
        with session_scope(self.db_url) as s:
            s.execute(delete(MetricRow).where(MetricRow.job_id == self.job_id, MetricRow.step == step,
                                              MetricRow.kind == kind))
            s.add(MetricRow(job_id=self.job_id, step=step, kind=kind, values=values))
            if kind == "train":
                s.execute(update(JobRow).where(JobRow.id == self.job_id)
                          .values(steps_completed=step, **({"total_steps": total_steps} if total_steps else {})))
                of = f"/{total_steps}" if total_steps else ""
                message = f"Step {step}{of}: training loss={values.get('loss', float('nan')):.4f}"
            else:
                message = f"Step {step}: validation loss={values.get('eval/loss', float('nan')):.4f}"
            s.add(EventRow(id=new_id("ftevent"), job_id=self.job_id, level="info", type="metrics", message=message,
                           data={"step": step, "kind": kind, **values, **({"total_steps": total_steps} if total_steps else {})}))

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        key = Path(path).resolve().relative_to(self.store.root).as_posix()
        with session_scope(self.db_url) as s:
            s.execute(delete(CheckpointRow).where(CheckpointRow.job_id == self.job_id, CheckpointRow.step_number == step))
            s.add(CheckpointRow(id=new_id("ftckpt"), job_id=self.job_id, step_number=step,
                                metrics={"step": step, **_clean(metrics)}, storage_key=key))
            s.add(EventRow(id=new_id("ftevent"), job_id=self.job_id, message=f"Checkpoint saved at step {step}",
                           data={"step": step}))

    def should_stop(self) -> bool:
        """True once the job left `running` (cancelled, paused) or our lease was taken over."""
        if self._stop:
            return True
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            self._stop, self.stop_reason = True, "lease_lost"
            return True
        now = time.monotonic()
        if now - self._last_poll >= self.stop_poll_seconds:
            self._last_poll = now
            with session_scope(self.db_url) as s:
                status = s.scalar(select(JobRow.status).where(JobRow.id == self.job_id))
            if status != RUNNING:
                self._stop, self.stop_reason = True, status
        return self._stop
