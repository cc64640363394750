"""Every training method by `method.type`, each behind the same entry: `train(job) -> RunResult`.

    supervised                      algorithms/supervised.py    SFT on the preferred completions
    dpo                             algorithms/dpo.py           the DPO family against a reference
    reward_model                    algorithms/reward_model.py  Bradley-Terry, LoRA + a score head
    rebel, refuel                   algorithms/online.py        collect with pi_t, regress, repeat
    dpo_last_turn, dpo_multi_turn   algorithms/dialogue_dpo.py  base-model dialogue pairs, then DPO

A `Job` (rlhf_engine/job.py) carries the config and what `run.run` set up once for every method;
each algorithm loads its model and trains with the shared steps there, through `train.fit`.
"""

from __future__ import annotations

from collections.abc import Callable

from rlhf_engine.algorithms import dialogue_dpo, dpo, online, reward_model, supervised
from rlhf_engine.job import Job
from rlhf_engine.outcome import JobInputError, RunResult

ALGORITHMS: dict[str, Callable[[Job], RunResult]] = {
    "supervised": supervised.train,
    "dpo": dpo.train,
    "reward_model": reward_model.train,
    "rebel": online.train,
    "refuel": online.train,
    "dpo_last_turn": dialogue_dpo.train,
    "dpo_multi_turn": dialogue_dpo.train,
}


def algorithm(method_type: str) -> Callable[[Job], RunResult]:
    try:
        return ALGORITHMS[method_type]
    except KeyError:
        raise JobInputError(f"method {method_type!r} is not supported by this engine build") from None
