"""Preference and regression losses as short pure functions over per-example log-probabilities.

Notation: for a pair (y_w preferred, y_l rejected) given prompt x,
    pi_w = log pi_theta(y_w|x), ref_w = log pi_ref(y_w|x)   (sums over completion tokens)
    h    = (pi_w - ref_w) - (pi_l - ref_l)                   (the implicit reward margin / beta)
Every function returns the per-example loss; callers take the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def margin(pi_w: Tensor, pi_l: Tensor, ref_w: Tensor, ref_l: Tensor) -> Tensor:
    """h = (pi_w - ref_w) - (pi_l - ref_l)."""
    return (pi_w - ref_w) - (pi_l - ref_l)


def dpo_sigmoid(h: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h).

    With label_smoothing eps > 0 this is conservative DPO (cDPO, Mitchell 2023):
        -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
    """
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def robust(h: Tensor, beta: float, eps: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, eq. 8), unbiased under preference-flip rate eps:
        [-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h)] / (1 - 2 eps)
    """
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def ipo(h: Tensor, beta: float) -> Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h - 1 / (2 beta))^2.

    As in TRL, h is built from length-averaged log-probs for IPO (see algorithms/dpo.py).
    """
    return (h - 1 / (2 * beta)) ** 2


def hinge(h: Tensor, beta: float) -> Tensor:
    """SLiC hinge (Zhao et al. 2023): max(0, 1 - beta h)."""
    return torch.relu(1 - beta * h)


def simpo(avg_pi_w: Tensor, avg_pi_l: Tensor, beta: float, gamma: float) -> Tensor:
    """SimPO (Meng et al. 2024, eq. 6), reference-free on length-averaged log-probs:
        -log sigmoid(beta (avg_pi_w - avg_pi_l) - gamma)
    """
    return -F.logsigmoid(beta * (avg_pi_w - avg_pi_l) - gamma)


def sft(avg_pi_w: Tensor) -> Tensor:
    """Negative log-likelihood of the preferred completion, per token: -avg_pi_w."""
    return -avg_pi_w


def regression(logratio_a: Tensor, logratio_b: Tensor, reward_a: Tensor, reward_b: Tensor, eta: float) -> Tensor:
    """REBEL (Gao et al. 2024, eq. 3) and REFUEL (Swamy et al. 2024, Alg. 1) as the reference code runs them:
        ((log pi(a|s) - log pi_t(a|s)) - (log pi(a'|s) - log pi_t(a'|s)) - eta (R - R'))^2
    The papers write (1/eta) on the log-ratio term instead: same minimiser, gradient scaled by eta^2.
    """
    return (logratio_a - logratio_b - eta * (reward_a - reward_b)) ** 2


def bradley_terry(score_w: Tensor, score_l: Tensor) -> Tensor:
    """Reward-model loss (Bradley and Terry 1952; Ouyang et al. 2022): -log sigmoid(r_w - r_l)."""
    return -F.logsigmoid(score_w - score_l)
