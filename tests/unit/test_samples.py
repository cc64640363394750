"""Samples while training (rlhf_engine/samples.py) on the tiny model: the base's replies at step 0,
the policy's at every evaluation, greedy and reproducible, whole dialogues for online methods."""

from __future__ import annotations

import importlib.util
import json

import pytest
from pydantic import ValidationError

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.run import run
from rlhf_engine.spec import Method, TrainConfig
from rlhf_engine.tracking.event_file import read_events
from rlhf_engine.tracking.reporter import TensorBoardReporter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(NullReporter):
    """A reporter that keeps what the samples test reads (and nothing else)."""

    def __init__(self):
        self.seen = []

    def samples(self, step, items):
        self.seen.append((step, items))


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def preference(i):
    return {"input": {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{2 * i}."}],
            "non_preferred_output": [{"role": "assistant", "content": "I am not sure."}]}


def dpo_config(tmp_path, out, **hp):
    train = write(tmp_path / "prefs.jsonl", [preference(i) for i in range(6)])
    body = {"n_epochs": 2, "batch_size": 3, "eval_interval": 1, "max_length": 64, "max_prompt_length": 32, **hp}
    return TrainConfig(model="tiny-random-llama", training_file=train, output_dir=str(tmp_path / out),
                       method={"type": "dpo", "dpo": {"hyperparameters": body}})


def test_dpo_samples_base_then_each_evaluation_greedy_and_reproducible(tmp_path, model_cache):
    rec = Recorder()
    run(dpo_config(tmp_path, "a", eval_samples=2, eval_interval=2), rec, cache_dir=model_cache)
    # 4 steps: the base at 0, an evaluation at 2 (eval_interval) and at the end.
    assert [s for s, _ in rec.seen] == [0, 2, 4]
    for _, items in rec.seen:
        # No validation file: the first training prompts, in file order.
        assert [i["index"] for i in items] == [0, 1]
        assert [i["prompt"] for i in items] == [[{"role": "user", "content": f"What is {k} plus {k}?"}] for k in (0, 1)]
        assert all(isinstance(i["completion"], str) and i["dialogue"] is None for i in items)

    again = Recorder()  # greedy, fixed seed: a rerun says the same at every step
    run(dpo_config(tmp_path, "b", eval_samples=2, eval_interval=2), again, cache_dir=model_cache)
    assert again.seen == rec.seen


def test_zero_eval_samples_is_off(tmp_path, model_cache):
    rec = Recorder()
    run(dpo_config(tmp_path, "off", eval_samples=0, n_epochs=1), rec, cache_dir=model_cache)
    assert rec.seen == []


def test_refuel_samples_are_dialogues(tmp_path, model_cache):
    seeds = [{"user_turns": [f"hello number {i}", "tell me more", "and why?"]} for i in range(5)]
    cfg = TrainConfig(model="tiny-random-llama", training_file=write(tmp_path / "seeds.jsonl", seeds),
                      output_dir=str(tmp_path / "refuel"),
                      method={"type": "refuel", "refuel": {"hyperparameters": {
                          "iterations": 2, "rollouts_per_iteration": 2, "max_new_tokens": 4, "batch_size": 2,
                          "num_turns": 2, "user": {"type": "dataset"}, "eval_samples": 3}}})
    rec = Recorder()
    run(cfg, rec, cache_dir=model_cache)
    steps = [s for s, _ in rec.seen]
    assert steps[0] == 0 and len(steps) == 3 and steps == sorted(steps)  # base, then each iteration's end
    for _, items in rec.seen:
        assert len(items) == 1  # 5 seeds: the one held out of training for the evaluation
        (item,) = items
        assert [m["role"] for m in item["dialogue"]] == ["assistant", "user", "assistant"]
        assert item["dialogue"][1]["content"] == "tell me more" and item["completion"] == item["dialogue"][0]["content"]
        assert item["prompt"][-1]["role"] == "user"


def test_eval_samples_range_and_methods():
    hp = lambda t, **v: Method.model_validate({"type": t, t: {"hyperparameters": v}}).hyperparameters  # noqa: E731
    assert hp("dpo").eval_samples == hp("supervised").eval_samples == hp("rebel").eval_samples == 4
    assert hp("dpo_multi_turn", eval_samples=0).eval_samples == 0
    for bad in (-1, 33):
        with pytest.raises(ValidationError):
            hp("refuel", eval_samples=bad)
    with pytest.raises(ValidationError):  # a reward model scores, it does not reply
        hp("reward_model", eval_samples=2)


def test_samples_go_to_tensorboard_as_text(tmp_path):
    rec = Recorder()
    reporter = TensorBoardReporter(rec, tmp_path)
    items = [{"index": 0, "prompt": [{"role": "user", "content": "Hi?"}], "completion": "Hello **you**",
              "dialogue": None}]
    reporter.samples(0, items)
    reporter.samples(3, [{**items[0], "completion": "Bye"}])
    reporter.close()
    assert rec.seen == [(0, items), (3, [{**items[0], "completion": "Bye"}])]  # forwarded
    (path,) = tmp_path.glob("events.out.tfevents.*")
    texts = [(e["step"], e["texts"]) for e in read_events(path) if "texts" in e]
    assert [s for s, _ in texts] == [0, 3]
    assert "Hi?" in texts[0][1]["samples/0"] and "Hello **you**" in texts[0][1]["samples/0"]
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path))
        acc.Reload()
        assert "samples/0" in acc.Tags()["tensors"]
        seen = [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors("samples/0")]
        assert [s for s, _ in seen] == [0, 3] and "Bye" in seen[1][1]
        assert acc.SummaryMetadata("samples/0").plugin_data.plugin_name == "text"
