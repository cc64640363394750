"""Each loss against values computed by hand from its formula."""

import math

import pytest
import torch

from rlhf_engine import losses

# One pair: pi_w=-10, pi_l=-14, ref_w=-11, ref_l=-12  ->  h = (1) - (-2) = 3
PI_W, PI_L, REF_W, REF_L = (torch.tensor([v], dtype=torch.float64) for v in (-10.0, -14.0, -11.0, -12.0))
BETA = 0.5


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_margin():
    assert losses.margin(PI_W, PI_L, REF_W, REF_L).item() == 3.0


def test_dpo_sigmoid():
    h = losses.margin(PI_W, PI_L, REF_W, REF_L)
    assert losses.dpo_sigmoid(h, BETA).item() == pytest.approx(-math.log(sig(1.5)))


def test_cdpo_label_smoothing():
    h = losses.margin(PI_W, PI_L, REF_W, REF_L)
    expected = -0.9 * math.log(sig(1.5)) - 0.1 * math.log(sig(-1.5))
    assert losses.dpo_sigmoid(h, BETA, 0.1).item() == pytest.approx(expected)


def test_robust():
    h = losses.margin(PI_W, PI_L, REF_W, REF_L)
    expected = (-0.8 * math.log(sig(1.5)) + 0.2 * math.log(sig(-1.5))) / 0.6
    assert losses.robust(h, BETA, 0.2).item() == pytest.approx(expected)


def test_ipo():
    assert losses.ipo(torch.tensor([3.0]), BETA).item() == pytest.approx((3 - 1 / (2 * BETA)) ** 2)


def test_hinge():
    assert losses.hinge(torch.tensor([3.0]), BETA).item() == 0.0  # 1 - 1.5 < 0
    assert losses.hinge(torch.tensor([1.0]), BETA).item() == pytest.approx(0.5)


def test_simpo():
    # averages: -10/5 = -2 and -14/7 = -2 -> beta*0 - gamma
    got = losses.simpo(torch.tensor([-2.0]), torch.tensor([-2.0]), 2.0, 0.5)
    assert got.item() == pytest.approx(-math.log(sig(-0.5)))


def test_sft():
    assert losses.sft(torch.tensor([-1.25])).item() == 1.25


def test_regression():
    # ((0.3 - (-0.2)) - 2 * (1.0 - 0.5))^2 = (0.5 - 1.0)^2
    got = losses.regression(torch.tensor([0.3]), torch.tensor([-0.2]), torch.tensor([1.0]), torch.tensor([0.5]), 2.0)
    assert got.item() == pytest.approx(0.25)


def test_bradley_terry():
    assert losses.bradley_terry(torch.tensor([2.0]), torch.tensor([1.0])).item() == pytest.approx(-math.log(sig(1.0)))


# ---- wiring: which loss each name runs, with which arguments, in which order (no TRL) ----------
#
# One pair whose every input differs, so that swapping any two arguments changes the value:
# pi_w=-10, pi_l=-21, ref_w=-11, ref_l=-20 (sums), 5 and 7 completion tokens, beta=0.2:
#   h = (-10 + 11) - (-21 + 20) = 2, beta*h = 0.4
#   length-averaged: avg_pi_w = -2, avg_pi_l = -3, avg h = (-2 + 2.2) - (-3 + 20/7) = 0.2 + 1/7
WIRED = dict(pi_w=-10.0, pi_l=-21.0, ref_w=-11.0, ref_l=-20.0, len_w=5.0, len_l=7.0)
EPS, GAMMA, B = 0.2, 0.3, 0.2
BY_HAND = {
    "sigmoid": -(1 - EPS) * math.log(sig(0.4)) - EPS * math.log(sig(-0.4)),  # cDPO with eps
    "robust": (-(1 - EPS) * math.log(sig(0.4)) + EPS * math.log(sig(-0.4))) / (1 - 2 * EPS),
    "hinge": 1 - 0.4,
    "ipo": (0.2 + 1 / 7 - 1 / (2 * B)) ** 2,
    "simpo": -math.log(sig(B * (-2 - -3) - GAMMA)),
    "sft": 2.0,
}


def _hp(**kw):
    from rlhf_engine.spec import DpoHyperparameters

    return DpoHyperparameters(beta=B, label_smoothing=EPS, simpo_gamma=GAMMA, **kw)


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_each_loss_name_is_wired_to_its_formula(name):
    from rlhf_engine.algorithms.dpo import preference_loss

    args = {k: torch.tensor([v], dtype=torch.float64) for k, v in WIRED.items()}
    assert preference_loss(name, _hp(), **args).item() == pytest.approx(BY_HAND[name], rel=1e-9)
    swapped = {**args, "pi_w": args["pi_l"], "pi_l": args["pi_w"], "ref_w": args["ref_l"], "ref_l": args["ref_w"],
               "len_w": args["len_l"], "len_l": args["len_w"]}
    assert preference_loss(name, _hp(), **swapped).item() != pytest.approx(BY_HAND[name], rel=1e-6)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading

    model_dir = loading.materialise(ModelRegistry.load().get("tiny-random-llama"),
                                    tmp_path_factory.getbasetemp() / "models")
    return loading.load_causal_lm(model_dir, dtype=torch.float64).eval()


def _sequence_logp(model, prompt: list[int], completion: list[int]) -> float:
    """log pi(completion | prompt) from one plain forward, summed over the completion's tokens."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1], -1)
    targets = ids[0, 1:]
    return logps[len(prompt) - 1:].gather(-1, targets[len(prompt) - 1:, None]).sum().item()


@pytest.mark.parametrize("packing", [False, True])
def test_a_weighted_sum_over_the_real_forward_keeps_chosen_and_rejected_apart(tiny_model, packing):
    """The DPO step's log-probs come out in chosen/rejected order and the weights multiply the
    right losses: checked against plain forwards and the formulas, pair by pair."""
    from rlhf_engine.algorithms.dpo import DPO
    from rlhf_engine.data.tokenize import TokenizedPair

    pairs = [TokenizedPair([5, 17, 9, 33], [41, 7, 2], [12, 90, 61, 4, 2]),
             TokenizedPair([8, 3], [77, 2], [19, 25, 2])]
    ref = torch.tensor([[-30.0, -25.0], [-20.0, -28.0]], dtype=torch.float64)
    weights = {"sigmoid": 1.0, "sft": 0.5, "robust": 0.25}
    algo = DPO(_hp(loss_weights=weights), pairs, ref, pad_id=0, packing=packing)
    loss, stats, _ = algo.loss(tiny_model, [0, 1])
    expected, chosen, rejected = [], [], []
    for pair, (ref_w, ref_l) in zip(pairs, ref.tolist()):
        pi_w, pi_l = (_sequence_logp(tiny_model, pair.prompt, pair.chosen),
                      _sequence_logp(tiny_model, pair.prompt, pair.rejected))
        chosen.append(pi_w)
        rejected.append(pi_l)
        bh = B * ((pi_w - ref_w) - (pi_l - ref_l))
        expected.append(1.0 * (-(1 - EPS) * math.log(sig(bh)) - EPS * math.log(sig(-bh)))
                        + 0.5 * (-pi_w / len(pair.chosen))
                        + 0.25 * (-(1 - EPS) * math.log(sig(bh)) + EPS * math.log(sig(-bh))) / (1 - 2 * EPS))
    assert stats["logps/chosen"].item() == pytest.approx(sum(chosen) / 2, rel=1e-6)
    assert stats["logps/rejected"].item() == pytest.approx(sum(rejected) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(sum(expected) / 2, rel=1e-6)
