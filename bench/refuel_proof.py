"""The decisive REFUEL experiment (issue 13): does regressing on the future beat the baselines on a
task where only the future pays?

    python bench/refuel_proof.py                   # the pre-registered run (bench/README.md)
    python bench/refuel_proof.py --seeds 0 --iterations 1 --per-iteration 4 --eval 8   # a smoke run

Task `carry_name` (rlhf_engine/tasks/carry_name.py, 3 turns, the dataset's user turns): turn 1 is
asked to use the user's name and earns nothing; turns 2 and 3 earn 1 each when they say it.
smollm2-135m-instruct with LoRA, on the CPU. Four methods, each a real job through
`rlhf_engine.run.run`, with the same reward-query budget (one query = one complete dialogue
scored; a comparison costs two):

    REFUEL                 refuel, credit future           iterations x per_iteration comparisons
    REBEL (immediate)      refuel, credit immediate        the same collection, target r_h alone
    last-turn DPO          dpo_last_turn                   2 x iterations x per_iteration queries
    multi-turn DPO         dpo_multi_turn                  the same

For every training seed: the base's held-out dialogues are rolled out once and shared; each
method's policy is rolled out on the same held-out seeds from the same random streams. Reported:
per-turn win rates against the base and REFUEL's against each baseline (paired bootstrap CIs over
dialogues, seeds resampled when pooled), the task's success rate per turn, the KL to the base
(per dialogue, summed over the policy's own reply tokens), and wall time per iteration.

The decision rule (written in bench/README.md before the run): REFUEL wins against a baseline if
the pooled 95% CI of its gain in the task's return (name said at turns 2 and 3, 0..2 per
dialogue) excludes 0 and every seed's mean gain has the same sign.

Writes bench/results/refuel_proof.{md,json} (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "smollm2-135m-instruct"
METHODS = {  # name -> (method type, extra hyperparameters)
    "REFUEL": ("refuel", {"credit": "future"}),
    "REBEL (immediate)": ("refuel", {"credit": "immediate"}),
    "last-turn DPO": ("dpo_last_turn", {}),
    "multi-turn DPO": ("dpo_multi_turn", {}),
}


def config(name: str, args, train_file: str, eval_file: str, out: Path, seed: int):
    from rlhf_engine.spec import TrainConfig

    kind, extra = METHODS[name]
    common = {"num_turns": 3, "user": {"type": "dataset"}, "temperature": args.temperature,
              "max_new_tokens": args.max_new_tokens, "reward": {"type": "function", "name": "carry_name"},
              "batch_size": args.batch_size, "learning_rate": args.lr, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    if kind == "refuel":
        hp = {**common, "iterations": args.iterations, "rollouts_per_iteration": args.per_iteration, "eta": args.eta}
    else:  # the same reward queries: 2 per pair, one pair per rolled-out seed
        hp = {**common, "rollouts": args.iterations * args.per_iteration, "beta": args.beta}  # DPO epochs: its default
    return TrainConfig(model=MODEL, training_file=train_file, validation_file=eval_file, seed=seed,
                       output_dir=str(out / f"seed{seed}" / name.replace(" ", "_").replace("(", "").replace(")", "")),
                       method={"type": kind, kind: {"hyperparameters": {**hp, **extra}}})


def replies_of(dialogues) -> list[list[str]]:
    return [[m.content for m in d.messages if m.role == "assistant"] for d in dialogues]


def success_rates(side: dict, turns: int = 3) -> list[float | None]:
    """Per turn: the share of dialogues whose reply at that turn says the name (turn 1 included)."""
    from rlhf_engine.tasks.carry_name import said_name

    rates = []
    for k in range(turns):
        said = [said_name(r[k], info) for r, info in zip(side["replies"], side["infos"]) if len(r) > k]
        rates.append(sum(said) / len(said) if said else None)
    return rates


def kl_to_base(model, tokenizer, dialogues) -> float:
    """Mean over dialogues of sum over the policy's reply tokens of log pi - log pi_base."""
    import torch

    from rlhf_engine.algorithms.regression import Pair, pair_logps

    pairs = [Pair(t.prompt_ids, t.response_ids, t.response_ids, 0, 0, 0, 0) for d in dialogues for t in d.turns]
    with torch.no_grad():
        pol, _ = pair_logps(model, pairs, tokenizer.pad_token_id, temperature=1.0)
        ref, _ = pair_logps(model, pairs, tokenizer.pad_token_id, temperature=1.0, use_adapter=False)
    return (sum(pol) - sum(ref)) / len(dialogues)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--per-iteration", type=int, default=32)
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--work", type=Path, default=Path("/tmp/refuel-proof"))
    ap.add_argument("--combine", type=Path, nargs="+", default=None,
                    help="no run: the tables from these runs' JSON (their per_seed data), pooled over their seeds")
    args = ap.parse_args(argv)
    if args.combine:
        return combine(args)

    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from rlhf_engine.callbacks import NullReporter
    from rlhf_engine.data.formats import load_jsonl
    from rlhf_engine.evaluate_dialogue import rollout_side, turn_rewards
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rewards import make_scorer
    from rlhf_engine.rollout.dialogue import Sampling, seeds_from_examples
    from rlhf_engine.rollout.generation import stop_ids
    from rlhf_engine.rollout.users import DatasetUsers
    from rlhf_engine.run import JobInputError, run
    from rlhf_engine.spec import LoraSpec, RewardSource
    from rlhf_engine.tasks.carry_name import EVAL_FILE, TRAIN_FILE

    torch.set_num_threads(args.threads)
    seeds_list = [int(s) for s in args.seeds.split(",")]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    eval_file, in_job_eval = work / "eval_seeds.jsonl", work / "one_eval_seed.jsonl"
    eval_file.write_text("".join(EVAL_FILE.read_text().splitlines(keepends=True)[:args.eval]))
    in_job_eval.write_text(EVAL_FILE.read_text().splitlines(keepends=True)[0])  # the comparable evaluation is ours
    eval_seeds = seeds_from_examples(load_jsonl(eval_file).examples)
    model_dir = loading.materialise(ModelRegistry.load().get(MODEL), args.cache_dir)
    tok = loading.load_tokenizer(model_dir)
    model = loading.add_lora(loading.load_causal_lm(model_dir), LoraSpec(r=8, alpha=16), seed=0)
    judge = make_scorer(RewardSource(type="function", name="carry_name"), registry=ModelRegistry.load())
    sampling = Sampling(args.max_new_tokens, args.temperature, 1.0, tuple(stop_ids(tok)))

    class Log(NullReporter):
        def event(self, message, *, level="info", data=None):
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    started = time.time()
    per_seed: dict[str, dict] = {}
    for seed in seeds_list:
        kw = dict(users=DatasetUsers(), sampling=sampling, num_turns=3, seed=seed)
        base = rollout_side(model, tok, eval_seeds, use_adapter=False, **kw)
        sides = {"base": {"replies": replies_of(base), "infos": [d.seed.info for d in base],
                          "rewards": turn_rewards(judge, base)}}
        for name in METHODS:
            print(f"== seed {seed}: {name}", flush=True)
            t0 = time.time()
            try:
                result = run(config(name, args, str(TRAIN_FILE), str(in_job_eval), work, seed), Log(),
                             cache_dir=args.cache_dir)
            except JobInputError as err:  # e.g. a DPO baseline whose every pair tied: it stays the base
                print(f"  {name}: {err}; its policy is the base", flush=True)
                result = None
            wall = time.time() - t0
            if result is not None:
                set_peft_model_state_dict(model, load_file(result.adapter_dir / "adapter_model.safetensors"))
            dialogues = rollout_side(model, tok, eval_seeds, use_adapter=result is not None, **kw)
            iters = result.summary.get("iterations", []) if result is not None else []
            sides[name] = {"replies": replies_of(dialogues), "infos": [d.seed.info for d in dialogues],
                           "rewards": turn_rewards(judge, dialogues), "wall_seconds": wall,
                           "kl_to_base": kl_to_base(model, tok, dialogues) if result is not None else 0.0,
                           "seconds_per_iteration": [it.get("iteration_seconds") for it in iters]}
        per_seed[seed] = sides

    rows, vs = tables(per_seed, seeds_list)
    md = render(rows, vs, args, seeds_list, time.time() - started)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refuel_proof.md").write_text(md)
    (args.out / "refuel_proof.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "refuel_vs": vs,
        # Every dialogue's replies and per-turn rewards, by seed and method: `--combine` recomputes the
        # tables from these (also across separate runs of different seeds).
        "per_seed": {str(seed): sides for seed, sides in per_seed.items()},
        "machine": platform.platform(), "torch": torch.__version__, "wall_seconds": time.time() - started},
        indent=1, default=str))
    return 0


def returns(rewards):
    """The task's return per dialogue: the sum of its per-turn rewards (turns 2 and 3 pay)."""
    return [None if r is None else sum(r) for r in rewards]


def tables(per_seed: dict, seeds_list: list) -> tuple[dict, dict]:
    """The report's rows (each method against the base) and REFUEL against each baseline, with
    the decision rule of bench/README.md applied; `per_seed[seed][method]` as main collects it."""
    from rlhf_engine.evaluate_dialogue import bootstrap_ci, summarise, turn_outcomes

    rows, vs = {}, {}
    for name in ["base", *METHODS]:
        rows[name] = {"success_per_turn": [
            sum(v) / len(v) for v in zip(*[success_rates(per_seed[s][name]) for s in seeds_list])],
            "return": bootstrap_ci([[x for x in returns(per_seed[s][name]["rewards"]) if x is not None]
                                    for s in seeds_list])}
        if name != "base":
            rows[name]["vs_base"] = summarise([turn_outcomes(per_seed[s][name]["rewards"],
                                                             per_seed[s]["base"]["rewards"], 3) for s in seeds_list])
            rows[name]["kl_to_base"] = [per_seed[s][name]["kl_to_base"] for s in seeds_list]
            rows[name]["wall_seconds"] = [per_seed[s][name]["wall_seconds"] for s in seeds_list]
    for name in list(METHODS)[1:]:
        gains = [[a - b for a, b in zip(returns(per_seed[s]["REFUEL"]["rewards"]),
                                        returns(per_seed[s][name]["rewards"]))
                  if a is not None and b is not None] for s in seeds_list]
        mean, lo, hi = bootstrap_ci(gains)
        seed_means = [sum(g) / len(g) for g in gains if g]
        same_sign = all(m > 0 for m in seed_means) or all(m < 0 for m in seed_means)
        vs[name] = {"gain": mean, "ci95": [lo, hi], "seed_means": seed_means,
                    "refuel_wins": lo is not None and lo > 0 and same_sign and all(m > 0 for m in seed_means),
                    "head_to_head": summarise([turn_outcomes(per_seed[s]["REFUEL"]["rewards"],
                                                             per_seed[s][name]["rewards"], 3) for s in seeds_list])}

    return rows, vs


def load_seeds(path: Path) -> dict:
    """A run's per-seed data: the JSON this script writes, or the same fields dumped from a run in
    progress (`said` for replies, `names` for the users' names)."""
    data = json.loads(path.read_text())
    per_seed = data.get("per_seed", data)
    for sides in per_seed.values():
        for side in sides.values():
            side.setdefault("replies", side.get("said"))
            side.setdefault("infos", [{"task": "carry_name", "name": n} for n in side.get("names", [])])
    return per_seed


def combine(args) -> int:
    per_seed = {}
    for path in args.combine:
        per_seed.update(load_seeds(path))
    seeds_list = sorted(per_seed)
    rows, vs = tables(per_seed, seeds_list)
    wall = sum(w for sides in per_seed.values() for side in sides.values() for w in [side.get("wall_seconds") or 0])
    md = render(rows, vs, args, seeds_list, wall)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refuel_proof.md").write_text(md)
    (args.out / "refuel_proof.json").write_text(json.dumps({
        "combined_from": [str(p) for p in args.combine], "rows": rows, "refuel_vs": vs, "per_seed": per_seed},
        indent=1, default=str))
    return 0


def render(rows, vs, args, seeds, wall) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# REFUEL decisive experiment: carry_name, {MODEL}, seeds {seeds}, {args.eval} held-out dialogues",
             "", f"{args.iterations} iterations x {args.per_iteration} comparisons "
             f"({2 * args.iterations * args.per_iteration} reward queries per method and seed), lr {args.lr}, eta "
             f"{args.eta}, beta {args.beta}, batch {args.batch_size}, T {args.temperature}, {args.max_new_tokens} "
             f"tokens per reply, LoRA r=8; wall {wall / 60:.0f} min.", "",
             "| method | return (0..2) [95% CI] | said name turn 1 / 2 / 3 | win vs base turn 1 / 2 / 3 (ties) "
             "| KL to base per dialogue (by seed) | job wall s |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ret = r["return"]
        cells = [f"{ret[0]:.3f} [{ret[1]:.3f}, {ret[2]:.3f}]" if ret[0] is not None else "n/a",
                 " / ".join(pct(x) for x in r["success_per_turn"])]
        if name == "base":
            cells += ["-", "-", "-"]
        else:
            cells.append(" / ".join(f"{pct(t['win_rate'])} ({pct(t['tie_rate'])})" for t in r["vs_base"]["turns"]))
            cells.append(", ".join(f"{k:.2f}" for k in r["kl_to_base"]))
            cells.append(f"{sum(r['wall_seconds']) / len(r['wall_seconds']):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "REFUEL against each baseline (gain in return per dialogue, pooled over seeds; decision rule in "
              "bench/README.md):", "", "| baseline | gain [95% CI] | per seed | head-to-head win turn 1 / 2 / 3 | "
              "REFUEL wins |", "|---|---|---|---|---|"]
    for name, v in vs.items():
        lo, hi = v["ci95"]
        lines.append(f"| {name} | {v['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                     + ", ".join(f"{m:+.3f}" for m in v["seed_means"]) + " | "
                     + " / ".join(pct(t["win_rate"]) for t in v["head_to_head"]["turns"])
                     + f" | {'yes' if v['refuel_wins'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
