"""How the engine reports progress: one small interface, no knowledge of who listens.

The worker implements it to write Postgres rows; the CLI implements it to print JSON lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

# An event's level, in OpenAI's words (the official client validates it against exactly these).
EventLevel = Literal["info", "warn", "error"]
EVENT_LEVELS: tuple[EventLevel, ...] = ("info", "warn", "error")


class Reporter(Protocol):
    def event(self, message: str, *, level: EventLevel = "info", data: dict | None = None) -> None:
        """A human-readable event ("Step 10/40", "Checkpoint saved", ...)."""

    def metrics(self, step: int, values: dict[str, float], *, total_steps: int | None = None) -> None:
        """Scalar metrics of one optimizer step (or one evaluation, with `eval/` keys)."""

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """A resumable checkpoint was written to `path` (holds `adapter/` and `state/`)."""

    def should_stop(self) -> bool:
        """Polled between steps: True asks the engine to stop cleanly (cancel, pause, shutdown)."""

    def samples(self, step: int, items: list[dict]) -> None:
        """The model's greedy replies to a few held-out prompts at an evaluation (step 0: the
        base model's). Each item: {"index", "prompt": messages, "completion": the first reply,
        "dialogue": the messages after the prompt (online methods) or None}. Optional: the
        engine sends it through `report_samples`, so a reporter without it still works."""


def report_samples(reporter: Reporter, step: int, items: list[dict]) -> None:
    """`reporter.samples(step, items)` where the reporter has it; nothing otherwise (reporters
    written before samples existed, in scripts and tests, keep working unchanged)."""
    samples = getattr(reporter, "samples", None)
    if samples is not None:
        samples(step, items)


class NullReporter:
    """Reports nothing; handy for scripts and tests."""

    def event(self, message, *, level="info", data=None):
        pass

    def metrics(self, step, values, *, total_steps=None):
        pass

    def checkpoint(self, step, path, metrics):
        pass

    def should_stop(self):
        return False

    def samples(self, step, items):
        pass
