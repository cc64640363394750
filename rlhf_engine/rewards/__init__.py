"""Reward sources for online methods: scorer.score(dialogues, infos) -> [float | None].

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


class FunctionScorer:
    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name

    def score(self, dialogues, infos) -> list[float | None]:
        out = []
        for messages, info in zip(dialogues, infos):
            try:
                value = float(self.fn([{"role": m.role, "content": m.content} for m in messages], info))
            except Exception:  # a reward that cannot judge this dialogue: the pair is dropped
                value = None
            out.append(value if value is not None and math.isfinite(value) else None)
        return out


def make_scorer(source, *, registry, cache_dir=None, device: str = "cpu",
                resolve_reward_job: Callable[[str], Path] | None = None):
    from rlhf_engine.run import JobInputError

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
    if path is None or not (Path(path) / "adapter").exists():
        raise JobInputError(f"no finished reward_model job {source.name!r}")
    return SequenceScorer(*load_job_model(Path(path), registry, cache_dir, device))
