"""OpenAI's names for a step's metrics, beside ours, and the `fine-tune-results` CSV built from them.

The engine logs `loss` (train) and `eval/loss` (validation). OpenAI's clients and integrations
(the SDK's checkpoint metrics, W&B's OpenAI importer) read `train_loss`, `valid_loss`, ... The
engine evaluates the whole validation file each time, so its validation figures are both
OpenAI's `valid_*` (a validation batch) and `full_valid_*` (the full set).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

# our key -> OpenAI's keys
_TRAIN = {"loss": ("train_loss",), "token_accuracy": ("train_mean_token_accuracy",)}
_VALID = {"eval/loss": ("valid_loss", "full_valid_loss"),
          "eval/token_accuracy": ("valid_mean_token_accuracy", "full_valid_mean_token_accuracy")}

# OpenAI's results file: one row per step; a column without a value that step is left empty.
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                  "full_valid_loss", "full_valid_mean_token_accuracy")
_CSV_ALIASES = {"train_accuracy": "train_mean_token_accuracy"}  # the CSV's older name for it


def with_openai_names(step: int, values: dict[str, float | None]) -> dict[str, float | None]:
    """`values` plus `step` and OpenAI's name for every metric it has one for."""
    out = {**values, "step": step}
    for ours, theirs in (*_TRAIN.items(), *_VALID.items()):
        if ours in values:
            out.update(dict.fromkeys(theirs, values[ours]))
    return out


def results_csv(steps: Iterable[tuple[int, dict[str, float | None]]]) -> bytes:
    """(step, values) rows, train and eval of one step already merged, in step order -> CSV bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for step, values in steps:
        named = with_openai_names(step, values)
        row = [named.get(_CSV_ALIASES.get(col, col)) for col in RESULT_COLUMNS]
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode()
