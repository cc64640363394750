"""Collect the two-response comparisons REBEL and REFUEL regress on.

REBEL (Gao et al. 2024): for a prompt s, two responses a, a' ~ pi_t(.|s); R = reward(s, a).

REFUEL (Swamy et al. 2024, Alg. 1, as github.com/ZhaolinGao/REFUEL generates its data): draw the
horizon H' ~ U{1..H} and the turn h ~ U{1..H'}; roll out turns 1..h-1 and the user's turn h once
(the shared prefix s_h), then two independent continuations from s_h to turn H'. Both complete
dialogues are scored; only turn h's assistant tokens will carry loss, later turns enter through R.
Because the prefix is generated once and both continuations of turn h start from the same prompt
ids in one batch, the backend prefills that prompt once for both.

`rows` picks which seeds of the list a call rolls out (one rank's share of an iteration on N ranks,
rlhf_engine/algorithms/online_pairs.py); streams and plans stay those of the whole list, so the
shares' candidates, concatenated in row order, are the candidates of one call over all the seeds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rlhf_engine.data.examples import Message
from rlhf_engine.rollout.dialogue import Dialogue, Roller, Seed


@dataclass
class Candidate:
    """One comparison before scoring: shared prompt ids, two responses, the dialogues to score."""

    prompt: list[int]
    a: list[int]
    b: list[int]
    finished_a: bool
    finished_b: bool
    dialogue_a: list[Message]
    dialogue_b: list[Message]
    info: dict
    meta: dict = field(default_factory=dict)  # REFUEL: {"h": h, "horizon": H'}


def sample_horizon_and_turn(rng: random.Random, num_turns: int) -> tuple[int, int]:
    """H' ~ U{1..H}, then h ~ U{1..H'} (both inclusive)."""
    horizon = rng.randint(1, num_turns)
    return horizon, rng.randint(1, horizon)


def _pair(da: Dialogue, db: Dialogue, turn: int, **meta) -> Candidate:
    ta, tb = da.turns[turn - 1], db.turns[turn - 1]
    assert ta.prompt_ids == tb.prompt_ids, "the two continuations must share their prefix"
    return Candidate(ta.prompt_ids, ta.response_ids, tb.response_ids, ta.finished, tb.finished,
                     list(da.messages), list(db.messages), da.seed.info, meta)


def _rows(seeds: list, rows: list[int] | None) -> list[int]:
    return list(range(len(seeds))) if rows is None else rows


def collect_rebel(roller: Roller, seeds: list[Seed], *, seed: int, rows: list[int] | None = None) -> list[Candidate]:
    """Two single-turn responses per prompt, generated in one batch (identical prompts: one prefill)."""
    dialogues = [Dialogue.start(seeds[i], stream=2 * i + j) for i in _rows(seeds, rows) for j in range(2)]
    roller.assistant_step(dialogues, seed)
    return [_pair(dialogues[i], dialogues[i + 1], 1) for i in range(0, len(dialogues), 2)]


def collect_refuel(roller: Roller, seeds: list[Seed], *, num_turns: int, seed: int,
                   plan=sample_horizon_and_turn, rows: list[int] | None = None) -> list[Candidate]:
    """`plan(rng, H) -> (H', h)` chooses each comparison's horizon and turn: REFUEL's draw by
    default; the DPO baselines fix h = H' (last-turn DPO, rlhf_engine/algorithms/dialogue_dpo.py).
    Every seed's plan is drawn (one generator walks the list), only `rows` are rolled out."""
    rng = random.Random(seed)
    plans = [plan(rng, roller.horizon(Dialogue.start(s), num_turns)) for s in seeds]
    rows = _rows(seeds, rows)
    plans = [plans[i] for i in rows]
    # Shared prefix: assistant turns 1..h-1, then the user's turn h.
    shared = [Dialogue.start(seeds[i], stream=i) for i in rows]
    roller.rollout(shared, [h - 1 for _, h in plans], seed)
    needs_user = [d for d in shared if d.messages[-1].role == "assistant"]
    if needs_user:
        roller.user_step(needs_user, seed)
    # Two independent continuations from the same prefix, advanced together to turn H'.
    branches = [d.copy(branch=b) for d in shared for b in range(2)]
    roller.rollout(branches, [hz for hz, _ in plans for _ in range(2)], seed)
    return [_pair(branches[2 * i], branches[2 * i + 1], h, h=h, horizon=hz)
            for i, (hz, h) in enumerate(plans)]
