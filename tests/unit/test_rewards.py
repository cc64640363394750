"""Reward sources: registered functions, the shipped task's reward, and a reward model trained by a
`reward_model` job then used by a later online job through the job resolver."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.data.examples import Message
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.rewards import FunctionScorer, make_scorer
from rlhf_engine.rewards.functions import get
from rlhf_engine.rewards.turns import future_return
from rlhf_engine.run import JobInputError, run
from rlhf_engine.spec import RewardSource, TrainConfig
from rlhf_engine.tasks import carry_name, remember_rules

pytestmark = pytest.mark.usefixtures("one_torch_thread")


INFO = {"name": "Maya", "max_words": 4, "rules": {"name": 1, "short": 2}}


def dialogue(*replies):
    users = ["Hi, I'm Maya.", "Keep it under 4 words.", "Why?"]
    out = []
    for u, a in zip(users, replies):
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out


def test_remember_rules_reward_by_hand():
    # turn 1: only the name rule is live; turn 2 and 3: name and short (4 words; 6 words -> 2 - 6/4 = 0.5).
    assert remember_rules.reward(dialogue("Hello Maya!"), INFO) == [1.0]
    assert remember_rules.reward(dialogue("Hello there!"), INFO) == [0.0]
    r = remember_rules.reward(dialogue("Hi maya.", "Sure, Maya.", "Because it is fun, you see"), INFO)
    assert r == pytest.approx([1.0, 1.0, (0.0 + 0.5) / 2])
    # The name must be a word, not a substring ("Mayan" is not "Maya").
    assert remember_rules.reward(dialogue("Mayan ruins."), INFO) == [0.0]
    # A dialogue's reward is the sum over its turns; the return of turn h the sum from h on.
    msgs = [Message(m["role"], m["content"]) for m in dialogue("Hi maya.", "Sure, Maya.", "Because it is fun, you see")]
    scorer = FunctionScorer(remember_rules.reward, "remember_rules")
    assert scorer.score([msgs], [INFO]) == [pytest.approx(2.25)]
    turns = scorer.score_turns([msgs], [INFO], [3])[0]
    assert [future_return(turns, h) for h in (1, 2, 3)] == pytest.approx([2.25, 1.25, 0.25])


def test_carry_name_pays_only_after_turn_1():
    info = {"name": "Maya"}
    assert carry_name.reward(dialogue("Hello Maya!"), info) == [0.0]  # turn 1 never earns
    assert carry_name.reward(dialogue("Hello Maya!", "Sure, maya.", "Mayan ruins."), info) == [0.0, 1.0, 0.0]
    msgs = [Message(m["role"], m["content"]) for m in dialogue("Hi Maya.", "Yes Maya.", "Fine.")]
    turns = FunctionScorer(get("carry_name"), "carry_name").score_turns([msgs], [info], [3])[0]
    assert [future_return(turns, h) for h in (1, 2, 3)] == [1.0, 1.0, 0.0]
    rows = [json.loads(line) for line in carry_name.EVAL_FILE.read_text().splitlines()]
    train = {json.loads(line)["info"]["name"] for line in carry_name.TRAIN_FILE.read_text().splitlines()}
    assert len(rows) == 64 and not {r["info"]["name"] for r in rows} & train  # held-out users


def test_a_scalar_reward_is_split_across_turns_by_differences():
    """r_j = R(through turn j) - R(through turn j-1): the rewards sum to R, and r_j is turn j's part."""
    def words(messages, info):  # a scalar reward: assistant words so far
        return float(sum(len(m["content"].split()) for m in messages if m["role"] == "assistant"))

    msgs = [Message(m["role"], m["content"]) for m in dialogue("one two", "three", "four five six")]
    scorer = FunctionScorer(words, "words")
    assert scorer.score_turns([msgs], [{}], [3]) == [[2.0, 1.0, 3.0]]
    # Counting only the last two turns: the first of them also carries what the history before it scored.
    assert scorer.score_turns([msgs], [{}], [2]) == [[3.0, 3.0]]
    assert scorer.score_turns([msgs], [{"x": 1}], [4]) == [[2.0, 1.0, 3.0]]  # no more turns than it has


def test_function_scorer_marks_failures_and_unknown_names_are_input_errors():
    def flaky(messages, info):
        if info.get("boom"):
            raise RuntimeError("cannot judge")
        return float("nan") if info.get("nan") else len(messages)

    scorer = FunctionScorer(flaky, "flaky")
    msgs = [Message("user", "a"), Message("assistant", "b")]
    assert scorer.score([msgs, msgs, msgs], [{}, {"boom": 1}, {"nan": 1}]) == [2.0, None, None]
    assert get("remember_rules") is remember_rules.reward
    with pytest.raises(JobInputError, match="unknown reward function"):
        make_scorer(RewardSource(type="function", name="nope"), registry=ModelRegistry.load())
    with pytest.raises(JobInputError, match="not a reward model"):
        make_scorer(RewardSource(type="model", name="tiny-random-llama"), registry=ModelRegistry.load())
    with pytest.raises(JobInputError, match="resolver"):
        make_scorer(RewardSource(type="job", name="ftjob-1"), registry=ModelRegistry.load())


def test_reward_model_job_then_online_job_scored_by_it(tmp_path, model_cache):
    rows = [{"prompt": f"say something {i}", "chosen": "good answer, thanks", "rejected": "bad rude no"}
            for i in range(6)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rm_cfg = TrainConfig(model="tiny-random-llama", training_file=str(tmp_path / "prefs.jsonl"),
                         validation_file=str(tmp_path / "prefs.jsonl"), output_dir=str(tmp_path / "rm"),
                         method={"type": "reward_model", "reward_model": {"hyperparameters": {
                             "n_epochs": 4, "batch_size": 3, "learning_rate": 3e-3}}})
    result = run(rm_cfg, NullReporter(), cache_dir=model_cache)
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any("score" in k for k in weights) and any("lora_A" in k for k in weights)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["base_model_name_or_path"] == "tiny-random-llama"
    assert result.summary["eval/accuracy"] == 1.0  # six copies of one easy pair

    jobs = {"ftjob-rm": tmp_path / "rm"}
    scorer = make_scorer(RewardSource(type="job", name="ftjob-rm"), registry=ModelRegistry.load(),
                         cache_dir=model_cache, resolve_reward_job=jobs.get)
    good, bad = ([Message("user", "say something 0"), Message("assistant", text)]
                 for text in ("good answer, thanks", "bad rude no"))
    s_good, s_bad = scorer.score([good, bad], [{}, {}])
    assert s_good > s_bad

    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"q {i}"}) + "\n" for i in range(3)))
    online = TrainConfig(model="tiny-random-llama", training_file=str(tmp_path / "prompts.jsonl"),
                         output_dir=str(tmp_path / "rebel"),
                         method={"type": "rebel", "rebel": {"hyperparameters": {
                             "iterations": 1, "rollouts_per_iteration": 3, "max_new_tokens": 5,
                             "reward": {"type": "job", "name": "ftjob-rm"}}}})
    out = run(online, NullReporter(), cache_dir=model_cache, resolve_reward_job=jobs.get)
    assert (out.adapter_dir / "adapter_model.safetensors").exists()
    assert out.summary["evaluation"]["judge"] == {"type": "job", "name": "ftjob-rm"}

