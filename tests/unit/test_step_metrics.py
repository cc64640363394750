"""Step metrics: no host reads inside an algorithm's loss (the loop syncs once per step), sign
agreement over untied pairs with the tie fraction beside it, and no pi_ref pass when kl_coef is 0."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_engine.algorithms import online_pairs
from rlhf_engine.algorithms.dpo import DPO
from rlhf_engine.algorithms.regression import Pair, Regression, pair_logps, sign_agreement
from rlhf_engine.data.examples import Message
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.models import loading
from rlhf_engine.rewards import FunctionScorer
from rlhf_engine.rollout.collect import Candidate
from rlhf_engine.spec import DpoHyperparameters, LoraSpec, RebelHyperparameters
from rlhf_engine.train import to_floats

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = [TokenizedPair([5, 6, 7], [8, 9], [10]), TokenizedPair([11, 12], [13], [14, 15, 16])]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(r=4), seed=0)


def test_losses_read_nothing_back_to_the_host(model):
    dpo = DPO(DpoHyperparameters(), PAIRS, torch.zeros(2, 2), 0)
    regression = Regression([Pair(p.prompt, p.chosen, p.rejected, -1.0, -2.0, 0.5, 0.0) for p in PAIRS],
                            eta=1.0, temperature=1.0, pad_id=0)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("item", "tolist", "__float__"):
            patch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("host read of a tensor inside loss()"))
        results = [algo.loss(model, [0, 1]) for algo in (dpo, regression)]
    for loss, stats, _ in results:
        loss.backward()
        assert all(math.isfinite(v) for v in to_floats(stats).values())


def test_to_floats_keeps_order_and_plain_values():
    values = {"a": torch.tensor(0.25), "b": 3, "c": torch.tensor([1.5], dtype=torch.float64)}
    assert to_floats(values) == {"a": 0.25, "b": 3.0, "c": 1.5}


def test_sign_agreement_leaves_ties_out():
    # pairs: agree, disagree, return tie, log-ratio tie
    got = sign_agreement(torch.tensor([0.5, 0.2, 0.3, 0.0]), torch.tensor([1.0, -1.0, 0.0, 2.0]))
    assert got["sign_agreement"].item() == 0.5  # 1 of the 2 untied pairs (ties counted as 0: 0.25)
    assert got["sign_ties"].item() == 0.5
    assert math.isnan(sign_agreement(torch.zeros(3), torch.ones(3))["sign_agreement"].item())


@pytest.mark.parametrize("kl_coef", [0.0, 0.2])
def test_pi_ref_is_computed_only_when_the_kl_term_uses_it(model, monkeypatch, kl_coef):
    calls = []

    def spy(*args, use_adapter=True, **kw):
        calls.append(use_adapter)
        return pair_logps(*args, use_adapter=use_adapter, **kw)

    monkeypatch.setattr(online_pairs, "pair_logps", spy)
    say = [Message("user", "hi")]
    candidates = [Candidate([5, 6, 7], [8, 9], [10], True, True, say + [Message("assistant", "a b")],
                            say + [Message("assistant", "a")], {})]
    scorer = FunctionScorer(lambda m, i: len(m[-1]["content"]), "len")
    pairs, stats = online_pairs.build_pairs(model, candidates, scorer, RebelHyperparameters(kl_coef=kl_coef), 0)
    assert calls == ([True, False] if kl_coef else [True])
    assert ("rollout/kl_to_base" in stats) == bool(kl_coef)
    if not kl_coef:
        assert (pairs[0].reward_a, pairs[0].reward_b) == (3.0, 1.0)  # the raw rewards, unshaped
