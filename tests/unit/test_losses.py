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
