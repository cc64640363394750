"""Reward sources for online methods.

    scorer.score(dialogues, infos)              -> [R | None]            the dialogue's total reward
    scorer.score_turns(dialogues, infos, turns) -> [[r_1..r_k] | None]   one reward per assistant
                                                   turn, for the last k = turns[i] of dialogue i

Per-turn rewards are what REFUEL's returns are made of: the return of turn h is the sum of the
rewards from h to the end of the dialogue (`future_return`), and the total R is their sum. A
reward that scores turns itself (a function returning one value per assistant message, like
`remember_rules`) is used as it is. A scalar one (a function returning a float, a reward model) is
split across the turns by differences of its score on the dialogue cut after each turn:

    r_j = R(dialogue through turn j) - R(dialogue through turn j-1),   R(before turn 1) = 0

so the rewards sum to R(dialogue), and r_j is what turn j's reply added (turn 1 of the counted
turns also carries whatever the history before it scored; both sides of a comparison share it).

`None` marks a failed score (an exception or NaN); REBEL/REFUEL drop the pair. Three sources
(spec.RewardSource.type):

    function  a name in rlhf_engine.rewards.functions (operator code, never user code)
    model     a model-registry entry of kind reward_model (AutoModelForSequenceClassification)
    job       the id of a finished `reward_model` job; `resolve_reward_job(job_id) -> Path` (given
              by the caller, e.g. the worker mapping the id to the job's artifacts directory)
              returns the directory holding that job's `adapter/` (LoRA + score head)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from rlhf_engine.layout import ADAPTER
from rlhf_engine.rewards.turns import differences, turn_cuts


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


class FunctionScorer:
    """A registered function fn(messages, info) -> float, or -> [float] (one per assistant message)."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name

    def _call(self, messages, info):
        try:
            value = self.fn([{"role": m.role, "content": m.content} for m in messages], info)
            return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)
        except Exception:  # a reward that cannot judge this dialogue: the pair is dropped
            return None

    def score(self, dialogues, infos) -> list[float | None]:
        out = []
        for messages, info in zip(dialogues, infos):
            value = self._call(messages, info)
            value = sum(value) if isinstance(value, list) else value
            out.append(value if _finite(value) else None)
        return out

    def score_turns(self, dialogues, infos, turns: list[int]) -> list[list[float] | None]:
        out = []
        for messages, info, k in zip(dialogues, infos, turns):
            value = self._call(messages, info)
            if not isinstance(value, list):  # a scalar reward: split it across the turns
                cuts = turn_cuts(messages, k)
                value = differences([*self.score(cuts[:-1], [info] * (len(cuts) - 1)),
                                     value if _finite(value) else None])
            elif len(value) < k:
                value = None  # fewer rewards than generated turns: cannot be read
            else:
                value = value[-k:]
            out.append(value if value is not None and all(map(_finite, value)) else None)
        return out


def make_scorer(source, *, registry, cache_dir=None, device: str = "cpu",
                resolve_reward_job: Callable[[str], Path] | None = None):
    from rlhf_engine.outcome import JobInputError

    if source.type == "function":
        from rlhf_engine.rewards import functions

        try:
            return FunctionScorer(functions.get(source.name), source.name)
        except KeyError as err:
            raise JobInputError(str(err.args[0])) from None
    from rlhf_engine.models.loading import materialise
    from rlhf_engine.rewards.model import SequenceScorer, load_job_model, load_registry_model

    if source.type == "model":
        entry = registry.get(source.name)
        if entry.kind != "reward_model":
            raise JobInputError(f"model {source.name!r} is not a reward model (kind={entry.kind})")
        return SequenceScorer(*load_registry_model(materialise(entry, cache_dir), device))
    if resolve_reward_job is None:
        raise JobInputError("reward type 'job' needs a reward-model job resolver; none is configured")
    path = resolve_reward_job(source.name)
    if path is None or not (Path(path) / ADAPTER).exists():
        raise JobInputError(f"no finished reward_model job {source.name!r}")
    return SequenceScorer(*load_job_model(Path(path), registry, cache_dir, device))
