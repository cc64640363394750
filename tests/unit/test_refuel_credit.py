"""REFUEL assigns credit to the turn that earned it; REBEL with immediate rewards cannot.

A 2-turn task on a learnable tiny model (the tiny random Llama with its output layer scaled up, so
its next-token distribution is peaked rather than near-uniform, entropy ~3.7 nats). The action is
whether the turn-1 reply starts with one of a few strings the base model produces 40% of the time.

    delayed:   r_1 = 0,                 r_2 = 1 if turn 1 took the action
    conflict:  r_1 = 0.2 if the action, r_2 = -2 if turn 1 took the action

With per-turn rewards, REFUEL's target for turn 1 is the return r_1 + r_2, so it learns to take the
action on the delayed task and to avoid it under the conflict. REBEL on REFUEL's own collection
with immediate rewards (`credit: immediate`) sees r_1 for turn 1 and, for turn 2, rewards that the
shared turn 1 makes equal: it stays at the base on the delayed task (every pair ties) and takes
the action under the conflict. (REFUEL samples the horizon H' ~ U{1, 2}: half its turn-1 pairs end
at turn 1 and see only r_1, which is why the later penalty is the larger one.) The probability of
the action is measured on 400 fresh turn-1 samples from each trained policy; medians over three
seeds.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from peft import PeftModel

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.data.examples import Message
from rlhf_engine.model_registry import ModelEntry, ModelRegistry
from rlhf_engine.models import loading
from rlhf_engine.rewards import functions
from rlhf_engine.rollout.dialogue import encode_prompt
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend
from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTION = ("qu", "|", "go", "m")  # the peaked model's most likely first tokens, ~40% together
SEEDS = (1, 2, 3)


def took_action(reply: str) -> bool:
    return reply.startswith(ACTION)


@functions.register("test_delayed_action")
def delayed(messages, info):
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    return [0.0] + [float(took_action(replies[0]))] * (len(replies) - 1)


@functions.register("test_conflicting_action")
def conflicting(messages, info):
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    acted = float(took_action(replies[0]))
    return [0.2 * acted] + [-2.0 * acted] * (len(replies) - 1)


@pytest.fixture(scope="module")
def peaked(tiny_model_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("peaked")
    model = loading.load_causal_lm(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(16)
    model.save_pretrained(dest)
    loading.load_tokenizer(tiny_model_dir).save_pretrained(dest)
    seeds = dest / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"user_turns": ["hello", "and then?"]}) + "\n" for _ in range(16)))
    return dest, ModelRegistry({"peaked": ModelEntry(name="peaked", source="local", path=str(dest))}), seeds


def action_rate(model, tokenizer, n: int = 400) -> float:
    prompt = encode_prompt(tokenizer, [Message("user", "hello")])
    outs = HFBackend(model, tokenizer.pad_token_id).generate(
        [prompt] * n, max_new_tokens=3, temperature=1.0, top_p=1.0, stop_token_ids=stop_ids(tokenizer),
        seed=list(range(10**6, 10**6 + n)))  # seeds no training rollout uses
    return sum(took_action(tokenizer.decode(o.token_ids, skip_special_tokens=True).strip()) for o in outs) / n


def train(peaked, tmp_path, reward: str, credit: str, seed: int):
    model_dir, registry, seeds = peaked
    hp = {"iterations": 6, "rollouts_per_iteration": 32, "max_new_tokens": 3, "batch_size": 8,
          "learning_rate": 2e-3, "num_turns": 2, "credit": credit, "user": {"type": "dataset"},
          "reward": {"type": "function", "name": reward}, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    config = TrainConfig(model="peaked", training_file=str(seeds), validation_file=str(seeds), seed=seed,
                         output_dir=str(tmp_path / f"{reward}-{credit}-{seed}"),
                         method={"type": "refuel", "refuel": {"hyperparameters": hp}})
    result = run(config, NullReporter(), registry=registry)
    return PeftModel.from_pretrained(loading.load_causal_lm(model_dir, dtype=torch.float32), result.adapter_dir)


@pytest.fixture(scope="module")
def base_rate(peaked):
    model_dir = peaked[0]
    return action_rate(loading.load_causal_lm(model_dir, dtype=torch.float32), loading.load_tokenizer(model_dir))


def median_rate(peaked, tmp_path, reward, credit) -> tuple[float, list[float]]:
    tokenizer = loading.load_tokenizer(peaked[0])
    rates = [action_rate(train(peaked, tmp_path, reward, credit, seed), tokenizer) for seed in SEEDS]
    return statistics.median(rates), rates


def test_the_base_takes_the_action_sometimes(base_rate):
    assert 0.25 <= base_rate <= 0.55


def test_refuel_learns_the_turn_1_action_that_pays_at_turn_2(peaked, tmp_path, base_rate):
    refuel, refuel_rates = median_rate(peaked, tmp_path, "test_delayed_action", "future")
    rebel, rebel_rates = median_rate(peaked, tmp_path, "test_delayed_action", "immediate")
    assert refuel >= 0.8, (base_rate, refuel_rates)
    assert abs(rebel - base_rate) <= 0.15, (base_rate, rebel_rates)


def test_with_a_reward_now_and_a_larger_penalty_later_they_move_apart(peaked, tmp_path, base_rate):
    refuel, refuel_rates = median_rate(peaked, tmp_path, "test_conflicting_action", "future")
    rebel, rebel_rates = median_rate(peaked, tmp_path, "test_conflicting_action", "immediate")
    assert refuel < base_rate - 0.1, (base_rate, refuel_rates)
    assert rebel > base_rate + 0.1, (base_rate, rebel_rates)


def test_an_iteration_whose_returns_all_tie_leaves_the_policy_unchanged(peaked, tmp_path):
    """Every immediate-credit pair of the delayed task ties (r_1 = 0; r_2 is fixed by the shared
    turn 1). log pi_t is taken on fit's own micro-batches, so the log-ratios are exactly 0 and so
    is every gradient: float noise never reaches Adam, which would scale it up to lr-sized steps."""
    model = train(peaked, tmp_path, "test_delayed_action", "immediate", seed=1)
    assert all(torch.count_nonzero(p) == 0 for name, p in model.named_parameters() if "lora_B" in name)
