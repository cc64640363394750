"""What a run returns or raises, in a module of its own: every method's runner (algorithms/*) and
the rewards use them, and importing them from rlhf_engine.run, which imports those runners, made
import cycles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    adapter_dir: Path | None  # None when stopped early, or when every weight trained
    steps: int
    trained_tokens: int
    stopped: bool
    summary: dict = field(default_factory=dict)
    merged_dir: Path | None = None  # a full fine-tune's model, a transformers directory (layout.MERGED)


class JobInputError(ValueError):
    """The job cannot run on this data/model combination (reported to the user as the job's error)."""
