"""REBEL and REFUEL: collect with pi_t, regress reward differences, repeat.

    for t in 1..iterations:
        candidates = collect_rebel / collect_refuel with pi_t          (rlhf_engine/rollout/collect.py)
        pairs      = drop identical responses, failed scores, too long; log pi_t and log pi_ref once
                                                                       (rlhf_engine/algorithms/online_pairs.py)
        pi_{t+1}   = train.fit(Regression(pairs)) starting from pi_t     (rlhf_engine/algorithms/regression.py)
    adapter; per-turn win rate of the policy against the base           (rlhf_engine/evaluate_dialogue.py)

Per iteration, fit sees the collected pairs for n_epochs passes ("auto" means 1 here, as the
reference code makes one pass per batch of rollouts), with a fresh optimizer and LR schedule, and
step_offset so step numbers keep increasing across iterations.

Resume: each iteration's pairs are saved to <output_dir>/online/iteration-NNN.json before training,
and every checkpoint fit writes gets an online.json naming its iteration. Resuming from a
checkpoint reloads that iteration's pairs and lets fit restore the adapter, optimizer and data
position, so a resumed job retraces the uninterrupted one (collection is seeded by (seed, t)).

On N ranks (rlhf_engine/distributed.py) each rank collects and scores its share of an iteration's
seeds and every rank trains on the whole collection (online_pairs.py): N=1's pairs, N=1's steps.
Rank 0 alone writes the iteration's pairs, the adapter, and runs the closing evaluation.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf_engine.algorithms.online_pairs import build_pairs, my_rows
from rlhf_engine.algorithms.regression import Pair, Regression
from rlhf_engine.data import formats
from rlhf_engine.distributed import agree, world
from rlhf_engine.evaluate_dialogue import evaluate_dialogue
from rlhf_engine.export import save_adapter
from rlhf_engine.job import Job, fit, load_policy
from rlhf_engine.layout import ADAPTER
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.rewards import make_scorer
from rlhf_engine.rollout.backend import make_backend
from rlhf_engine.rollout.collect import collect_rebel, collect_refuel
from rlhf_engine.rollout.dialogue import Roller, Sampling, seeds_from_examples
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.users import make_users
from rlhf_engine.samples import dialogue_samples
from rlhf_engine.spec import ACCEPTED_FORMATS


def iteration_seeds(seeds: list, n: int, iteration: int, seed: int) -> list:
    """Seeds for iteration t (1-based): walk a seeded shuffle of the data, reshuffling each pass."""
    out = []
    for k in range((iteration - 1) * n, iteration * n):
        cycle, pos = divmod(k, len(seeds))
        order = list(range(len(seeds)))
        random.Random(seed * 7919 + cycle).shuffle(order)
        out.append(seeds[order[pos]])
    return out


def hold_out(seeds: list, seed: int, fraction: float = 0.2, cap: int = 32) -> tuple[list, list]:
    """(training seeds, evaluation seeds): a seeded fifth of the seeds (at most `cap`) is kept out of
    training for the final evaluation. One seed alone cannot be split: it is refused."""
    if len(seeds) < 2:
        raise JobInputError("an online job without a validation_file needs at least 2 training examples: "
                            "some are held out of training for its evaluation")
    order = list(range(len(seeds)))
    random.Random(seed).shuffle(order)
    k = min(cap, max(1, round(fraction * len(seeds))))
    held = set(order[:k])
    return [s for i, s in enumerate(seeds) if i not in held], [seeds[i] for i in sorted(held)]


def training_and_eval_seeds(config) -> tuple[list, list, str]:
    """(training seeds, evaluation seeds, where the evaluation seeds come from) of a job that
    collects dialogues: the validation_file, else a held-out part of the training seeds (never
    evaluate on what was trained on)."""
    accepted = ACCEPTED_FORMATS[config.method.type]
    seeds = seeds_from_examples(formats.load_jsonl(config.training_file, expected_format=accepted).examples)
    if config.validation_file:
        eval_file = formats.load_jsonl(config.validation_file, expected_format=accepted)
        return seeds, seeds_from_examples(eval_file.examples), "validation_file"
    seeds, eval_seeds = hold_out(seeds, config.seed)
    return seeds, eval_seeds, f"{len(eval_seeds)} training seeds held out of training"


@dataclass
class Dialogues:
    """What a job that collects dialogues (REBEL, REFUEL, the DPO baselines) sets up before it
    collects: its seeds, how the policy samples, who plays the user, and the reward."""

    seeds: list
    eval_seeds: list
    eval_set: str  # where eval_seeds come from, for the evaluation's record
    sampling: Sampling
    users: object
    scorer: object

    @classmethod
    def of(cls, job: Job, model, tokenizer) -> Dialogues:
        hp = job.hp
        seeds, eval_seeds, eval_set = training_and_eval_seeds(job.config)
        sampling = Sampling(hp.max_new_tokens, hp.temperature, hp.top_p, tuple(stop_ids(tokenizer)))
        users = make_users(hp, model, tokenizer, sampling, job.registry, job.cache_dir, job.config.model,
                           job.precision)
        scorer = make_scorer(hp.reward, registry=job.registry, cache_dir=job.cache_dir, device=job.precision.device,
                             resolve_reward_job=job.resolve_reward_job)
        return cls(seeds, eval_seeds, eval_set, sampling, users, scorer)

    def evaluate_against_base(self, job: Job, model, tokenizer, num_turns: int) -> dict:
        """The job's closing evaluation (rlhf_engine/evaluate_dialogue.py), reported as events."""
        reporter = job.reporter
        reporter.event(f"Evaluating per-turn win rate against the base model on {len(self.eval_seeds)} dialogues "
                       f"({self.eval_set})")
        evaluation = evaluate_dialogue(model, tokenizer, self.eval_seeds, judge=self.scorer, users=self.users,
                                       sampling=self.sampling, num_turns=num_turns, seed=job.config.seed)
        evaluation["eval_set"] = self.eval_set
        evaluation["judge"] = job.hp.reward.model_dump()
        reporter.event("Win rate against the base: average " + _pct(evaluation["average_win_rate"]) + "; per turn "
                       + ", ".join(f"h={r['turn']}: {_pct(r['win_rate'])}" for r in evaluation["turns"]),
                       data=evaluation)
        return evaluation


def _pct(rate) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def load_iteration(path: Path) -> tuple[list[Pair], dict]:
    saved = json.loads(path.read_text())
    return [Pair(**p) for p in saved["pairs"]], saved["stats"]


class _MarkCheckpoints:
    """Reporter wrapper: tags each checkpoint fit writes with the iteration it belongs to."""

    def __init__(self, inner, marker: dict):
        self.inner, self.marker = inner, marker

    def checkpoint(self, step, path, metrics):
        (Path(path) / "online.json").write_text(json.dumps(self.marker))
        self.inner.checkpoint(step, path, metrics)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def train(job: Job) -> RunResult:
    """`method.type` "rebel" or "refuel": the policy's LoRA adapter trains without dropout (see
    rlhf_engine/algorithms/regression.py)."""
    model, tokenizer = load_policy(job, lora_dropout=False)
    config, hp, reporter, resume_from = job.config, job.hp, job.reporter, job.resume_from
    refuel = job.method == "refuel"
    out_dir = job.out_dir
    fit_hp = hp.model_copy(update={"n_epochs": 1}) if hp.n_epochs == "auto" else hp
    pad_id = tokenizer.pad_token_id

    dialogues = Dialogues.of(job, model, tokenizer)
    seeds, scorer = dialogues.seeds, dialogues.scorer
    roller = Roller(tokenizer, make_backend(model, tokenizer), dialogues.users, dialogues.sampling)
    num_turns = hp.num_turns if refuel else 1
    samples = dialogue_samples(job, tokenizer, dialogues.eval_seeds, dialogues.users, num_turns)
    if samples:
        samples.base(model)

    start, step, tokens, resumed = 1, 0, 0, None
    if resume_from is not None:
        marker = Path(resume_from) / "online.json"
        if not marker.exists():
            raise JobInputError(f"checkpoint {resume_from} was not written by an online job")
        resumed = json.loads(marker.read_text())
        start, step, tokens = resumed["iteration"], resumed["step_offset"], resumed["tokens_before"]

    history, last = [], {}
    for k in range(1, start):  # iterations finished before the resume, for the summary
        path = out_dir / "online" / f"iteration-{k:03d}.json"
        if path.exists():
            history.append({"iteration": k, **load_iteration(path)[1]})
    for t in range(start, hp.iterations + 1):
        if reporter.should_stop():
            return RunResult(None, step, tokens, True, last)
        data_path = out_dir / "online" / f"iteration-{t:03d}.json"
        started = time.perf_counter()
        if resumed and t == start and agree(data_path.exists()):
            pairs, stats = load_iteration(data_path)
        else:
            batch = iteration_seeds(seeds, hp.rollouts_per_iteration, t, config.seed)
            collect_seed = config.seed * 1000 + t  # a function of (seed, t) only: resumes replay it
            rows = my_rows(len(batch))  # this rank's share (all of them on one process)
            if refuel:
                candidates = collect_refuel(roller, batch, num_turns=num_turns, seed=collect_seed, rows=rows)
            else:
                candidates = collect_rebel(roller, batch, seed=collect_seed, rows=rows)
            pairs, stats = build_pairs(model, candidates, scorer, hp, pad_id, job.precision, fit_seed=config.seed + t,
                                       packing=config.packing)
            stats["rollout/collect_seconds"] = time.perf_counter() - started
            if world().is_main:
                data_path.parent.mkdir(parents=True, exist_ok=True)
                data_path.write_text(json.dumps({"pairs": [asdict(p) for p in pairs], "stats": stats}))
        reporter.event(
            f"Iteration {t}/{hp.iterations}: collected {len(pairs)} pairs, "
            f"mean reward {stats['rollout/reward_mean']:.3f}, reward gap {stats['rollout/reward_gap']:.3f}"
            + (f", KL to base {stats['rollout/kl_to_base']:.3f}" if "rollout/kl_to_base" in stats else "")
            + f" ({stats['rollout/collect_seconds']:.1f}s)", data={"iteration": t, **stats})
        if not pairs:
            reporter.event(f"Iteration {t}: no usable pairs (identical responses or failed scores); not training",
                           level="warn")
            history.append({"iteration": t, **stats})
            continue

        algo = Regression(pairs, eta=hp.eta, temperature=hp.temperature, pad_id=pad_id,
                          iteration_stats={**stats, "iteration": float(t)}, packing=config.packing)
        marks = _MarkCheckpoints(reporter, {"iteration": t, "step_offset": step, "tokens_before": tokens})
        t_fit = time.perf_counter()
        result = fit(job, model, algo, what="", hp=fit_hp, seed=config.seed + t, reporter=marks,
                     resume_from=resume_from if resumed and t == start else None, step_offset=step, samples=samples)
        # result counts this iteration's steps and tokens, including any restored from the checkpoint.
        step, tokens, last = step + result.steps, tokens + result.trained_tokens, result.final_metrics
        if result.stopped:
            return RunResult(None, step, tokens, True, last)
        seconds = time.perf_counter() - started
        # After training, on the iteration's own pairs (Regression.evaluate).
        loss_after, agreement = last.get("eval/regression_loss", 0.0), last.get("eval/sign_agreement", 0.0)
        history.append({"iteration": t, **stats, "regression_loss": loss_after, "sign_agreement": agreement,
                        "train_seconds": time.perf_counter() - t_fit, "iteration_seconds": seconds})
        reporter.event(f"Iteration {t}/{hp.iterations} trained: regression loss {loss_after:.4f}, "
                       f"sign agreement {agreement:.2f} ({seconds:.1f}s)", data=history[-1])

    if not world().is_main:  # rank 0 writes the adapter (the same on every rank) and evaluates it
        return RunResult(None, step, tokens, False, last)
    adapter = save_adapter(model, out_dir / ADAPTER, config.model, stacked_on=config.init_adapters)
    evaluation = dialogues.evaluate_against_base(job, model, tokenizer, num_turns)
    return RunResult(adapter, step, tokens, False, {**last, "iterations": history, "evaluation": evaluation})
