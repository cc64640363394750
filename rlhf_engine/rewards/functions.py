"""Operator-registered reward functions, chosen by name in `RewardSource(type="function", name=...)`.

A function maps a finished dialogue to a float: fn(messages, info) -> float, where messages is a
list of {"role", "content"} dicts ending with an assistant turn and info is the seed's `info`
object from the dataset. Users only ever send a name; the code lives here or in modules the
operator lists in RLHF_REWARD_MODULES (comma-separated import paths that call `register`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from rlhf_engine.tasks import carry_name, remember_rules

RewardFn = Callable[[list[dict], dict], float]


def length_penalty(messages: list[dict], info: dict) -> float:
    """-(words in all assistant turns) / 100: prefers short answers. A smoke-test reward."""
    return -sum(len(m["content"].split()) for m in messages if m["role"] == "assistant") / 100.0


FUNCTIONS: dict[str, RewardFn] = {
    "length_penalty": length_penalty,
    "remember_rules": remember_rules.reward,
    "carry_name": carry_name.reward,
}


def register(name: str):
    """Decorator for operator modules: @register("my_reward") def f(messages, info): ..."""
    def add(fn: RewardFn) -> RewardFn:
        FUNCTIONS[name] = fn
        return fn
    return add


def get(name: str) -> RewardFn:
    for module in filter(None, (m.strip() for m in os.environ.get("RLHF_REWARD_MODULES", "").split(","))):
        importlib.import_module(module)
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown reward function {name!r}; registered: {', '.join(sorted(FUNCTIONS))}") from None
