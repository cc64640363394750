"""The dialogue evaluation's null is exact and its columns mean what they say: a zero adapter ties
the base on every dialogue, a dialogue's samples do not depend on the batch it is generated in,
and turn h's column judges turn h's reply."""

from __future__ import annotations

import pytest
import torch

from rlhf_engine.data.examples import Message
from rlhf_engine.evaluate_dialogue import evaluate_dialogue, rollout_side
from rlhf_engine.models import loading
from rlhf_engine.rewards import FunctionScorer
from rlhf_engine.rewards.functions import length_penalty
from rlhf_engine.rollout.dialogue import Dialogue, Roller, Sampling, Seed
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend
from rlhf_engine.rollout.users import ModelUsers
from rlhf_engine.spec import LoraSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEEDS = [Seed((Message("user", f"question number {i}" + " and more" * i),)) for i in range(6)]


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    model = loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(r=4, alpha=8), seed=0)
    sampling = Sampling(5, 1.0, 1.0, tuple(stop_ids(tokenizer)))
    # The user is played by the base model: its turns must line up on both sides too.
    users = ModelUsers(HFBackend(model, tokenizer.pad_token_id, use_adapter=False), tokenizer, sampling)
    return model, tokenizer, sampling, users


def test_a_zero_adapter_ties_the_base_on_every_dialogue(setup):
    model, tokenizer, sampling, users = setup  # LoRA B starts at 0: the policy is the base
    result = evaluate_dialogue(model, tokenizer, SEEDS, judge=FunctionScorer(length_penalty, "length"),
                               users=users, sampling=sampling, num_turns=3, seed=5)
    for turn in result["turns"]:
        assert turn["n"] == len(SEEDS) and turn["tie_rate"] == 1.0
        assert turn["win_rate"] == 0.5 and turn["ci95"] == [0.5, 0.5]


def test_a_dialogues_samples_do_not_depend_on_its_batch(setup):
    model, tokenizer, sampling, users = setup

    def roll(seeds, batch_size):
        roller = Roller(tokenizer, HFBackend(model, tokenizer.pad_token_id, batch_size=batch_size), users, sampling)
        dialogues = [Dialogue.start(s, stream=i) for i, s in enumerate(seeds)]
        roller.rollout(dialogues, [3, 1, 3, 2, 3, 1][:len(seeds)], seed=9)  # some end early and leave the batch
        return [d.messages for d in dialogues]

    together = roll(SEEDS, 32)
    assert roll(SEEDS, 1) == together
    assert roll(SEEDS[:2], 32) == together[:2]


def _reply_length_at_turn_2(messages, info):
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    return [0.0] + [float(len(r)) for r in replies[1:]]


def test_turn_hs_column_judges_turn_hs_reply(setup):
    model, tokenizer, sampling, users = setup
    with torch.no_grad():  # move the policy away from the base
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    try:
        result = evaluate_dialogue(model, tokenizer, SEEDS, judge=FunctionScorer(_reply_length_at_turn_2, "t2"),
                                   users=users, sampling=sampling, num_turns=2, seed=5)
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.zero_()
    first, second = result["turns"]
    assert first["tie_rate"] == 1.0  # turn 1 earns 0 on both sides, however the replies differ
    assert second["tie_rate"] < 1.0
    assert second["cumulative_win_rate"] == second["win_rate"]  # nothing earned before turn 2


def test_base_rollouts_can_be_shared_between_evaluations(setup):
    model, tokenizer, sampling, users = setup
    kw = dict(users=users, sampling=sampling, num_turns=2, seed=3)
    base = rollout_side(model, tokenizer, SEEDS, use_adapter=False, **kw)
    judge = FunctionScorer(length_penalty, "length")
    assert (evaluate_dialogue(model, tokenizer, SEEDS, judge=judge, base_dialogues=base, **kw)["turns"]
            == evaluate_dialogue(model, tokenizer, SEEDS, judge=judge, **kw)["turns"])
