"""The DPO baselines of multi-turn RLHF: pairs of base-model dialogues, collected once, then DPO.

The REFUEL paper (Gao et al. 2024, arXiv 2410.04612) compares REFUEL with DPO (Rafailov et al.
2023, arXiv 2305.18290, eq. 7) trained on dialogues of the reference policy pi_ref (here: the
base, adapter disabled), in two ways:

    dpo_last_turn   for each seed, pi_ref rolls out a shared prefix (assistant turns 1..H'-1 and
                    the user's turn H', H' ~ U{1..H} as REFUEL draws it), then two independent
                    replies at turn H': REFUEL's collection with h = H' (rollout/collect.py).
                        prompt = the prefix          completion = turn H''s reply
    dpo_multi_turn  pi_ref rolls out two whole H-turn dialogues from the seed (they share only
                    the seed's history; a simulated user's turns may differ).
                        prompt = the seed's history  completion = the rest of the dialogue, loss on
                                                     its assistant tokens only (user turns: context)
                        log pi(dialogue) = sum over all its assistant turns' tokens

Both complete dialogues of a pair are scored by the job's reward, per turn as REFUEL scores them
(rlhf_engine/rewards, `score_turns`), and the pair is ranked by the dialogue's return, the sum of
its per-turn rewards. (For last-turn DPO the prefix's rewards are shared, so this ranks the two
replies at turn H' by their own reward.) Pairs whose returns tie (no preference to learn), that
fail to score, or are longer than `max_length` are dropped. Then DPO (algorithms/dpo.py, `loss_type` sigmoid by
default) through train.fit, against log-probs of pi_ref computed once (reference.py), so the
margin is 0 at step 0.

Budget: `rollouts` seeds, one pair each; a reward query is one complete dialogue scored by the
reward source, so a pair costs 2, as one REFUEL comparison does. The seeds are the first
`rollouts` of REFUEL's walk over the data (online.iteration_seeds) and are sampled with REFUEL's
iteration-1 seed: with rollouts = iterations x rollouts_per_iteration a baseline sees exactly the
seeds REFUEL sees, for the same number of reward queries.

The pairs are written to <output_dir>/dialogue_dpo/pairs.json before training; a resumed job
reloads them and fit restores the rest.

On N ranks (rlhf_engine/distributed.py) each rank rolls out its share of the seeds (`rows`: every
dialogue keeps its stream and plan, so the shares together are N=1's comparisons) and every rank
receives all of them (`gather`); each then ranks the whole list (the reward scores every
comparison on every rank) and DPO trains as on one process. Rank 0 writes the pairs and runs the
closing evaluation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

from rlhf_engine.algorithms.dpo import DPO
from rlhf_engine.algorithms.online import Dialogues, iteration_seeds
from rlhf_engine.algorithms.online_pairs import my_rows
from rlhf_engine.data.examples import Message
from rlhf_engine.data.tokenize import TokenizedPair, end_of_turn_ids
from rlhf_engine.distributed import agree, gather, world
from rlhf_engine.job import Job, fit, load_policy, reference_logps, save_result
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.rollout.backend import make_backend
from rlhf_engine.rollout.collect import collect_refuel
from rlhf_engine.rollout.dialogue import Dialogue, Roller, Seed, Turn
from rlhf_engine.samples import dialogue_samples


@dataclass
class Comparison:
    """Two dialogues of one seed before ranking: the pair (a as chosen, b as rejected) and what
    the reward reads."""

    pair: TokenizedPair
    dialogues: tuple[list[Message], list[Message]]
    info: dict
    turns: int  # assistant turns generated in each dialogue: the rewards score_turns returns


def last_turn_plan(rng, num_turns: int) -> tuple[int, int]:
    """H' ~ U{1..H} as REFUEL draws it, and h = H': the compared reply is its dialogue's last."""
    horizon = rng.randint(1, num_turns)
    return horizon, horizon


def collect_last_turn(roller: Roller, seeds: list[Seed], *, num_turns: int, seed: int,
                      rows: list[int] | None = None) -> list[Comparison]:
    candidates = collect_refuel(roller, seeds, num_turns=num_turns, seed=seed, plan=last_turn_plan, rows=rows)
    return [Comparison(TokenizedPair(c.prompt, c.a, c.b), (c.dialogue_a, c.dialogue_b), c.info,
                       c.meta["horizon"]) for c in candidates]


def collect_multi_turn(roller: Roller, seeds: list[Seed], *, num_turns: int, seed: int,
                       rows: list[int] | None = None) -> list[Comparison]:
    """Two whole dialogues per seed (of `rows`, default all), on the seed's stream branches 0 and 1
    (the dialogues REFUEL's collection makes when it draws h = 1 and H' = H)."""
    starts = [Dialogue.start(seeds[i], stream=i) for i in (range(len(seeds)) if rows is None else rows)]
    branches = [d.copy(branch=b) for d in starts for b in range(2)]
    roller.rollout(branches, [roller.horizon(d, num_turns) for d in branches], seed)
    out = []
    for da, db in zip(branches[::2], branches[1::2]):
        (a, mask_a), (b, mask_b) = dialogue_completion(roller.tokenizer, da), dialogue_completion(roller.tokenizer, db)
        pair = TokenizedPair(da.turns[0].prompt_ids, a, b, chosen_mask=mask_a, rejected_mask=mask_b)
        out.append(Comparison(pair, (da.messages, db.messages), da.seed.info, len(da.turns)))
    return out


def dialogue_completion(tokenizer, dialogue: Dialogue) -> tuple[list[int], list[bool]]:
    """Everything after turn 1's prompt as one completion, with its target flags:

        turn 1 prompt | reply 1 | <end>\\n<user> turn 2 ... <assistant>\\n | reply 2 | ... | reply K
                        targets   context (from turn 2's own prompt)        targets

    Replies are the ids as sampled. Between two replies sit the template's tokens that close the
    first, the user's next turn and the generation prompt, read from the next turn's prompt ids
    (what the policy was shown). An unfinished reply (cut at max_new_tokens) did not sample its
    end-of-turn token; the next prompt's closing token then stays, as context."""
    ids, mask = [], []
    for k, turn in enumerate(dialogue.turns):
        if k:
            between = _between(tokenizer, dialogue.turns[k - 1], turn)
            ids, mask = ids + between, mask + [False] * len(between)
        ids, mask = ids + turn.response_ids, mask + [True] * len(turn.response_ids)
    return ids, mask


def _between(tokenizer, before: Turn, after: Turn) -> list[int]:
    start = len(before.prompt_ids)
    rest = after.prompt_ids[start:]
    closed = end_of_turn_ids(tokenizer, rest)  # the reply as re-rendered, through its end-of-turn token
    if after.prompt_ids[:start] != before.prompt_ids or closed < 1:
        raise ValueError("the chat template renders an earlier turn differently once the dialogue goes on; "
                         "multi-turn DPO needs a template whose turn prompts extend each other")
    return rest[closed if before.finished else closed - 1:]


def swapped(pair: TokenizedPair) -> TokenizedPair:
    return replace(pair, chosen=pair.rejected, rejected=pair.chosen,
                   chosen_mask=pair.rejected_mask, rejected_mask=pair.chosen_mask)


def rank(comparisons: list[Comparison], scorer, max_length: int) -> tuple[list[TokenizedPair], dict[str, float]]:
    """Preference pairs (the higher return chosen) and the collection's statistics."""
    fits = [c for c in comparisons
            if len(c.pair.prompt) + max(len(c.pair.chosen), len(c.pair.rejected)) <= max_length]
    n = len(fits)
    rewards = scorer.score_turns([c.dialogues[0] for c in fits] + [c.dialogues[1] for c in fits],
                                 [c.info for c in fits] * 2, [c.turns for c in fits] * 2)
    pairs, returns, gaps, failed = [], [], [], 0
    for c, ra, rb in zip(fits, rewards[:n], rewards[n:]):
        if ra is None or rb is None:
            failed += 1
            continue
        ret_a, ret_b = sum(ra), sum(rb)
        returns += [ret_a, ret_b]
        if ret_a != ret_b:
            pairs.append(c.pair if ret_a > ret_b else swapped(c.pair))
            gaps.append(abs(ret_a - ret_b))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    stats = {
        "rollout/pairs": float(len(pairs)),
        "rollout/dropped_tied": float(n - failed - len(pairs)),
        "rollout/dropped_failed_score": float(failed),
        "rollout/dropped_too_long": float(len(comparisons) - n),
        "rollout/reward_mean": mean(returns),
        "rollout/reward_gap": mean(gaps),
    }
    return pairs, stats


def train(job: Job) -> RunResult:
    """`method.type` "dpo_last_turn" or "dpo_multi_turn": collect once from pi_ref, rank, DPO."""
    model, tokenizer = load_policy(job)
    config, hp, reporter = job.config, job.hp, job.reporter
    pad_id = tokenizer.pad_token_id
    dialogues = Dialogues.of(job, model, tokenizer)
    samples = dialogue_samples(job, tokenizer, dialogues.eval_seeds, dialogues.users, hp.num_turns)
    if samples:
        samples.base(model)

    data_path = job.out_dir / "dialogue_dpo" / "pairs.json"
    if job.resume_from is not None and agree(data_path.exists()):
        saved = json.loads(data_path.read_text())
        pairs, stats = [TokenizedPair(**p) for p in saved["pairs"]], saved["stats"]
    else:
        started = time.perf_counter()
        roller = Roller(tokenizer, make_backend(model, tokenizer, use_adapter=False), dialogues.users,
                        dialogues.sampling)  # pi_ref
        collect = collect_last_turn if job.method == "dpo_last_turn" else collect_multi_turn
        seeds = iteration_seeds(dialogues.seeds, hp.rollouts, 1, config.seed)
        mine = collect(roller, seeds, num_turns=hp.num_turns, seed=config.seed * 1000 + 1,  # REFUEL's iteration 1
                       rows=my_rows(len(seeds)))
        pairs, stats = rank([c for part in gather(mine) for c in part], dialogues.scorer, hp.max_length)
        stats["rollout/collect_seconds"] = time.perf_counter() - started
        if world().is_main:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            data_path.write_text(json.dumps({"pairs": [asdict(p) for p in pairs], "stats": stats}))
    reporter.event(f"Collected {len(pairs)} preference pairs from the base model over {hp.rollouts} seeds "
                   f"({stats['rollout/dropped_tied']:.0f} tied, {stats['rollout/dropped_failed_score']:.0f} failed "
                   f"to score, {stats['rollout/dropped_too_long']:.0f} too long), mean return "
                   f"{stats['rollout/reward_mean']:.3f}, gap {stats['rollout/reward_gap']:.3f}", data=stats)
    if not pairs:
        raise JobInputError("no usable preference pair: every comparison tied, failed to score or was too long")

    ref, _ = reference_logps(job, model, pad_id, pairs)
    algo = DPO(hp, pairs, ref, pad_id, packing=config.packing)
    outcome = save_result(job, model, fit(job, model, algo, what="pairs", samples=samples))
    if not outcome.stopped and world().is_main:
        outcome.summary.update(collection=stats, evaluation=dialogues.evaluate_against_base(job, model, tokenizer,
                                                                                             hp.num_turns))
    return outcome
