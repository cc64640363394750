"""The Reporter wrapper that sends every metrics call to TensorBoard files and trackers too.

    reporter = TensorBoardReporter(DbReporter(...), logdir=job_dir / "tensorboard",
                                   trackers=trackers_from_env(run_name=job_id, config=method))
    ...
    reporter.close()

Everything here is best effort: a full disk or a tracker that is down is logged and ignored,
never allowed to fail a training run. Pure Python; no torch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from rlhf_engine.callbacks import report_samples
from rlhf_engine.tracking.event_file import EventFileWriter
from rlhf_engine.tracking.trackers import Tracker

log = logging.getLogger(__name__)


class TensorBoardReporter:
    """A Reporter that forwards everything to `inner` and also writes every metrics call as
    TensorBoard scalars under `logdir` (train keys as `train/<key>`, `eval/...` keys as they are),
    plus to any `trackers`, and each evaluation's samples as text (`samples/<index>`, one per
    prompt, so TensorBoard's Text tab shows a prompt's replies step by step). Attributes it does
    not have are read from `inner` (the worker reads `stop_reason` and `last_step` of its
    DbReporter through it)."""

    def __init__(self, inner, logdir: str | Path, trackers: list[Tracker] | None = None):
        self.inner = inner
        self.logdir = Path(logdir)
        self.trackers = list(trackers or [])
        self._writer: EventFileWriter | None = None
        self._failed = False

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _file(self, first_step: int) -> EventFileWriter | None:
        if self._writer is None and not self._failed:
            try:
                resumed = self.logdir.is_dir() and any(self.logdir.glob("events.out.tfevents.*"))
                self._writer = EventFileWriter(self.logdir)
                if resumed:
                    self._writer.session_start(first_step)
            except OSError:
                self._failed = True
                log.exception("cannot write TensorBoard events under %s; continuing without them", self.logdir)
        return self._writer

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        self.inner.event(message, level=level, data=data)

    def metrics(self, step: int, values: dict[str, float], *, total_steps: int | None = None) -> None:
        self.inner.metrics(step, values, total_steps=total_steps)
        scalars = {k if k.startswith("eval/") else f"train/{k}": v for k, v in values.items()}
        writer = self._file(step)
        if writer is not None:
            try:
                writer.add_scalars(step, scalars)
            except (OSError, ValueError):
                log.exception("could not write TensorBoard scalars at step %s", step)
        numbers = {k: float(v) for k, v in scalars.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for tracker in self.trackers:
            try:
                tracker.log(step, numbers)
            except Exception:
                log.exception("tracker %s failed at step %s; continuing", type(tracker).__name__, step)

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.inner.checkpoint(step, path, metrics)

    def samples(self, step: int, items: list[dict]) -> None:
        report_samples(self.inner, step, items)
        writer = self._file(step)
        if writer is not None:
            try:
                writer.add_texts(step, {f"samples/{item['index']}": sample_markdown(item) for item in items})
            except (OSError, ValueError):
                log.exception("could not write TensorBoard samples at step %s", step)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception:
                log.exception("could not close tracker %s", type(tracker).__name__)
        self.trackers = []


def sample_markdown(item: dict) -> str:
    """One sample as Markdown: the prompt's turns, then the reply (or the dialogue after it).
    Each message is a quoted block, so the model's own Markdown cannot swallow the labels."""
    def block(message: dict) -> str:
        quoted = "\n".join(f"> {line}" for line in (message["content"] or " ").splitlines())
        return f"**{message['role']}**\n\n{quoted}"

    after = item.get("dialogue") or [{"role": "assistant", "content": item["completion"]}]
    return "\n\n".join(block(m) for m in [*item["prompt"], *after])
