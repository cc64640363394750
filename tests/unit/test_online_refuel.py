"""REFUEL/REBEL pieces on the tiny model: the loss by hand, H'/h sampling, prefix sharing, turn mask,
and log pi_t computed at collection agreeing with the training forward (log-ratio 0 at step 0)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from rlhf_engine.algorithms import regression
from rlhf_engine.algorithms.online import build_pairs, iteration_seeds
from rlhf_engine.algorithms.regression import Pair, Regression, regression_batch
from rlhf_engine.data.examples import Message
from rlhf_engine.rewards import FunctionScorer
from rlhf_engine.rewards.functions import length_penalty
from rlhf_engine.rollout.collect import collect_rebel, collect_refuel, sample_horizon_and_turn
from rlhf_engine.rollout.dialogue import Roller, Sampling, Seed
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.hf_backend import HFBackend
from rlhf_engine.rollout.users import DatasetUsers
from rlhf_engine.spec import RefuelHyperparameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rlhf_engine.models import loading
    from rlhf_engine.spec import LoraSpec

    tok = loading.load_tokenizer(tiny_model_dir)
    return loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(), seed=0), tok


class Recording:
    """Backend wrapper that remembers every batch of prompts it was asked to continue."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, prompts, **kw):
        self.calls.append([list(p) for p in prompts])
        return self.inner.generate(prompts, **kw)


SEEDS = [Seed((Message("user", f"hello {i}"),), ("second turn please", "third and last")) for i in range(6)]


def refuel_candidates(model, tok, seed=1):
    backend = Recording(HFBackend(model, tok.pad_token_id))
    roller = Roller(tok, backend, DatasetUsers(), Sampling(6, 1.0, 1.0, tuple(stop_ids(tok))))
    return collect_refuel(roller, SEEDS, num_turns=3, seed=seed), backend


def test_regression_loss_by_hand(monkeypatch):
    # log pi(a|s), log pi(a'|s) of the current policy, as completion_logps would return them.
    monkeypatch.setattr(regression, "completion_logps",
                        lambda model, batch, temperature: (torch.tensor([-1.0, -2.0, -3.0, -1.5]), None))
    # sums = [a_1, a_2, b_1, b_2]
    pairs = [Pair([1], [2], [3], logp_a=-1.5, logp_b=-2.5, reward_a=1.0, reward_b=0.0),
             Pair([1], [4], [5], logp_a=-2.0, logp_b=-1.0, reward_a=0.2, reward_b=0.6)]
    loss, stats, _ = Regression(pairs, eta=2.0, temperature=1.0, pad_id=0).loss(torch.nn.Linear(1, 1), [0, 1])
    # pair 1: ratio_a = -1 - (-1.5) = 0.5, ratio_b = -3 - (-2.5) = -0.5 -> (1.0 - 2*(1.0))^2 = 1.0
    # pair 2: ratio_a = -2 - (-2.0) = 0.0, ratio_b = -1.5 - (-1) = -0.5 -> (0.5 - 2*(-0.4))^2 = 1.69
    assert loss.item() == pytest.approx((1.0 + 1.69) / 2)
    assert stats["sign_agreement"] == pytest.approx(0.5)  # pair 1 agrees (+,+), pair 2 does not (+,-)


def test_horizon_and_turn_sampling():
    rng, n, H = random.Random(0), 60000, 3
    draws = [sample_horizon_and_turn(rng, H) for _ in range(n)]
    assert all(1 <= h <= hp <= H for hp, h in draws)
    horizons = Counter(hp for hp, _ in draws)
    assert all(abs(horizons[k] / n - 1 / H) < 0.01 for k in range(1, H + 1))  # H' ~ U{1..H}
    for k in range(1, H + 1):  # h | H' ~ U{1..H'}
        turns = Counter(h for hp, h in draws if hp == k)
        assert set(turns) == set(range(1, k + 1))
        assert all(abs(c / horizons[k] - 1 / k) < 0.02 for c in turns.values())
    assert sample_horizon_and_turn(random.Random(5), 1) == (1, 1)


def test_two_continuations_share_the_prefix(tiny):
    model, tok = tiny
    candidates, backend = refuel_candidates(model, tok)
    assert len(candidates) == len(SEEDS)
    seen_turns = set()
    for c in candidates:
        h, horizon = c.meta["h"], c.meta["horizon"]
        seen_turns.add(h)
        assert 1 <= h <= horizon <= 3
        # Both dialogues hold exactly H' assistant turns and agree on everything before turn h's reply.
        for d in (c.dialogue_a, c.dialogue_b):
            assert sum(m.role == "assistant" for m in d) == horizon
        shared = 2 * h - 1  # user 1, (assistant, user) x (h - 1)
        assert c.dialogue_a[:shared] == c.dialogue_b[:shared]
        assert c.dialogue_a[shared - 1].role == "user"
        # The ids the loss conditions on are the ids both responses were sampled from, sent twice in one batch.
        assert any(sum(p == c.prompt for p in call) == 2 for call in backend.calls)
    assert len(seen_turns) > 1


def test_prefix_is_generated_once(tiny):
    model, tok = tiny
    candidates, backend = refuel_candidates(model, tok, seed=4)
    # Assistant turns before h are sampled once per seed, not once per continuation.
    prefix_turns = sum(c.meta["h"] - 1 for c in candidates)
    branch_turns = sum(2 * (c.meta["horizon"] - c.meta["h"] + 1) for c in candidates)
    assert sum(len(call) for call in backend.calls) == prefix_turns + branch_turns


def test_only_turn_h_assistant_tokens_carry_loss(tiny):
    model, tok = tiny
    candidates, _ = refuel_candidates(model, tok, seed=2)
    c = max(candidates, key=lambda c: c.meta["h"])
    assert c.meta["h"] >= 2  # the prompt holds earlier assistant turns
    pair = Pair(c.prompt, c.a, c.b, 0.0, 0.0, 0.0, 0.0)
    # The earlier assistant replies are in the prompt (h - 1 of them plus the generation prompt) ...
    assert tok.decode(c.prompt).count("<|im_start|>assistant") == c.meta["h"]
    # ... where they are never targets: plain layout, loss_mask covers exactly turn h's reply.
    plain, _, _ = regression_batch([pair], tok.pad_token_id, packing=False)
    for row, response in ((0, c.a), (1, c.b)):
        mask = plain["loss_mask"][row]
        assert plain["input_ids"][row][mask].tolist() == response
        assert mask[: len(c.prompt)].sum() == 0 and mask.sum() == len(response)
    # Packed layout (the default): targets are the two replies, predicted from after the prompt.
    packed, _, _ = regression_batch([pair], tok.pad_token_id, packing=True)
    assert packed["targets"][packed["seq"] == 0].tolist() == c.a
    assert packed["targets"][packed["seq"] == 1].tolist() == c.b
    assert packed["pred_index"].min().item() == len(c.prompt) - 1
    # Both layouts give the same log-probs.
    with torch.no_grad():
        model.eval()
        a, _ = regression.completion_logps(model, plain)
        b, _ = regression.completion_logps(model, packed)
    assert a.tolist() == pytest.approx(b.tolist(), abs=1e-4)


@pytest.mark.parametrize("method", ["rebel", "refuel"])
def test_log_ratio_is_zero_at_the_start_of_an_iteration(tiny, method):
    model, tok = tiny
    with torch.no_grad():  # a non-trivial pi_t
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    hp = RefuelHyperparameters(temperature=0.8, kl_coef=0.1, eos_penalty=-1.0)
    roller = Roller(tok, HFBackend(model, tok.pad_token_id), DatasetUsers(),
                    Sampling(6, 0.8, 1.0, tuple(stop_ids(tok))))
    candidates = (collect_rebel(roller, SEEDS, seed=0) if method == "rebel"
                  else collect_refuel(roller, SEEDS, num_turns=3, seed=0))
    pairs, stats = build_pairs(model, candidates, FunctionScorer(length_penalty, "length_penalty"), hp,
                               tok.pad_token_id)
    assert pairs and stats["rollout/pairs"] == len(pairs)
    assert stats["rollout/kl_to_base"] != 0.0
    model.train()
    _, step_stats, _ = Regression(pairs, eta=1.0, temperature=0.8,
                                  pad_id=tok.pad_token_id).loss(model, list(range(len(pairs))))
    assert step_stats["logratio_abs"] < 1e-4


def test_iteration_seeds_cycle_through_the_data():
    seeds = list(range(5))
    first_pass = iteration_seeds(seeds, 2, 1, 0) + iteration_seeds(seeds, 2, 2, 0) + iteration_seeds(seeds, 2, 3, 0)[:1]
    assert sorted(first_pass) == seeds
    assert iteration_seeds(seeds, 2, 2, 0) == iteration_seeds(seeds, 2, 2, 0)


def test_bootstrap_interval_of_a_win_rate():
    from rlhf_engine.evaluate_dialogue import bootstrap_ci

    assert bootstrap_ci([[0.5] * 4]) == (0.5, 0.5, 0.5)  # all ties: no spread at all
    assert bootstrap_ci([[]]) == (None, None, None)
    rate, lo, hi = bootstrap_ci([[1.0, 0.0, 0.5, 1.0]])
    assert rate == 0.625 and 0.0 <= lo < rate < hi <= 1.0
    assert bootstrap_ci([[1.0, 0.0, 0.5, 1.0]]) == (rate, lo, hi)  # a fixed RNG seed: reruns agree
    # 100 fair coin flips: the 95% interval is about +-1.96 * 0.05 wide on each side.
    rate, lo, hi = bootstrap_ci([[float(i % 2) for i in range(100)]])
    assert rate == 0.5 and hi - lo == pytest.approx(0.196, abs=0.03)
    # Two seeds pooled: seeds are resampled too, so their disagreement widens the interval.
    _, lo2, hi2 = bootstrap_ci([[1.0] * 50, [0.0] * 50])
    assert hi2 - lo2 > hi - lo


def test_the_user_simulator_samples_with_its_own_limits(tiny):
    from rlhf_engine.rollout.users import make_users

    model, tok = tiny
    hp = RefuelHyperparameters(max_new_tokens=4, user={"type": "model", "max_new_tokens": 40, "temperature": 0.5})
    users = make_users(hp, model, tok, Sampling(4, 1.0, 1.0, tuple(stop_ids(tok))), None, None, "tiny-random-llama")
    assert (users.sampling.max_new_tokens, users.sampling.temperature) == (40, 0.5)
    assert "next message" in users.system_prompt  # the default prompt: read, think, then ask
