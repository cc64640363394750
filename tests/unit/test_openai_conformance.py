"""The pieces that make us speak OpenAI's fine-tuning dialect: event levels, `ft:` names, metric
keys and the results CSV."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from service.shared import model_names
from service.shared.events import new_event
from worker.openai_metrics import RESULT_COLUMNS, results_csv, with_openai_names

REPO = Path(__file__).resolve().parents[2]


def test_the_event_writer_refuses_levels_and_kinds_it_does_not_have():
    assert new_event("ftjob-1", "ok", level="warn").level == "warn"
    with pytest.raises(ValueError, match="warning"):
        new_event("ftjob-1", "no", level="warning")
    with pytest.raises(ValueError, match="metric"):
        new_event("ftjob-1", "no", kind="metric")


def test_the_openai_type_follows_from_the_kind():
    # Only metrics events are OpenAI's `metrics` type; a checkpoint is a `message` with a kind.
    assert [(new_event("ftjob-1", "m", kind=k).type, k) for k in ("metrics", "checkpoint", "message")] == [
        ("metrics", "metrics"), ("message", "checkpoint"), ("message", "message")]


def test_no_code_passes_a_level_openai_does_not_have():
    # Reporter.event(level=...) is the engine's side of the same contract (it cannot import
    # service/shared/events.py); a literal "warning" anywhere would reach a strict client.
    # (`log_level=` is a logger's, not an event's.)
    offenders = [f"{path.relative_to(REPO)}:{n}" for top in ("service", "worker", "rlhf_engine")
                 for path in (REPO / top).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"""(?<![\w])level\s*=\s*["'](warning|debug|critical)["']""", line)]
    assert offenders == []


def test_ft_names_have_openais_shape_and_parse_back():
    name = model_names.fine_tuned_model("tiny-random-llama", "acme", None, "ftjob-abc")
    assert name == "ft:tiny-random-llama:acme::ftjob-abc"  # empty suffix: empty field, as OpenAI
    ckpt = model_names.checkpoint_model(name, 20)
    assert ckpt == "ft:tiny-random-llama:acme::ftjob-abc:ckpt-step-20"
    assert model_names.parse(name) == model_names.ParsedName(name, "ftjob-abc", None)
    assert model_names.parse(ckpt) == model_names.ParsedName(name, "ftjob-abc", 20)
    suffixed = model_names.fine_tuned_model("org/base:v1", "acme", "mine", "ftjob-x")
    assert model_names.parse(suffixed).job_id == "ftjob-x"


@pytest.mark.parametrize("name", ["tiny-random-llama", "ft:", "ft:a:b", "ft:a:b:c:", "ft:a:b:c:d:ckpt-step-0"])
def test_names_that_are_not_fine_tuned_models_parse_to_nothing(name):
    parsed = model_names.parse(name)
    assert parsed is None or parsed.step is None and parsed.job_id != ""


def test_metrics_carry_openais_keys_beside_ours():
    named = with_openai_names(3, {"loss": 0.5, "eval/loss": 0.7, "rewards/margins": 0.1})
    assert named == {"loss": 0.5, "eval/loss": 0.7, "rewards/margins": 0.1, "step": 3, "train_loss": 0.5,
                     "valid_loss": 0.7, "full_valid_loss": 0.7}


def test_results_csv_has_openais_columns_and_one_row_per_step():
    data = results_csv([(1, {"loss": 2.0}), (2, {"loss": 1.5, "eval/loss": 1.75})])
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert rows[1] == ["1", "2.0", "", "", "", "", ""]
    assert rows[2] == ["2", "1.5", "", "1.75", "", "1.75", ""]
