"""Per-turn rewards and REFUEL's returns (the rules are in rlhf_engine/rewards/__init__.py)."""

from __future__ import annotations


def future_return(rewards: list[float], h: int) -> float:
    """REFUEL's return of turn h (1-based): the rewards from turn h to the end of the dialogue."""
    return sum(rewards[h - 1:])


def turn_cuts(messages, turns: int) -> list:
    """The dialogue cut after each of its last `turns` assistant messages, shortest first."""
    ends = [i for i, m in enumerate(messages) if m.role == "assistant"][-turns:]
    return [messages[:i + 1] for i in ends]


def differences(cut_scores: list[float | None]) -> list[float] | None:
    """Per-turn rewards from the scores of successive cuts: r_j = R(through j) - R(through j-1)."""
    if any(v is None for v in cut_scores):
        return None
    return [b - a for a, b in zip([0.0, *cut_scores[:-1]], cut_scores)]
