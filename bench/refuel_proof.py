"""Issue 4's proof: base, last-turn DPO, REBEL and REFUEL on `remember_rules` (3 turns) with
smollm2-135m-instruct, the same budget of reward queries each, and the per-turn win-rate table.

    python bench/refuel_proof.py [--iterations 3] [--per-iteration 8] [--eval 16] [--threads 1]

Budget: REFUEL and REBEL make `iterations * per_iteration` comparisons of two scored dialogues;
last-turn DPO gets the same number of pairs, labelled with the same reward function, from offline
data: base-model dialogues over the same training seeds up to the user's last turn, with two base
samples of the last reply. REBEL trains on those offline prefixes too (the paper's last-turn
REBEL), sampling its own last replies on-policy. REFUEL rolls out whole dialogues itself.
Evaluation: rlhf_engine.evaluate_dialogue on held-out seeds (users never seen in training), judge
= the task reward, base dialogues sampled once and shared by every row.

Writes <out>/result.json and <out>/table.md; prints the table and the wall time per iteration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "smollm2-135m-instruct"


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def offline_data(model, tok, seeds, sampling, scorer, seed: int):
    """Base dialogues to the user's last turn, then two base samples of the last reply, scored."""
    from rlhf_engine.rollout.backend import HFBackend
    from rlhf_engine.rollout.collect import collect_rebel
    from rlhf_engine.rollout.dialogue import Dialogue, Roller, Seed
    from rlhf_engine.rollout.users import DatasetUsers

    roller = Roller(tok, HFBackend(model, tok.pad_token_id, use_adapter=False), DatasetUsers(), sampling)
    dialogues = [Dialogue.start(s) for s in seeds]
    last = [roller.horizon(d, 3) for d in dialogues]
    roller.rollout(dialogues, [n - 1 for n in last], seed)
    roller.user_step(dialogues, seed)
    prefixes = [Seed(tuple(d.messages), (), d.seed.info) for d in dialogues]
    candidates = collect_rebel(roller, prefixes, seed=seed + 1)
    scores = scorer.score([c.dialogue_a for c in candidates] + [c.dialogue_b for c in candidates],
                          [c.info for c in candidates] * 2)
    n, prefs, ties = len(candidates), [], 0
    for c, ra, rb in zip(candidates, scores[:n], scores[n:]):
        if ra is None or rb is None or ra == rb:
            ties += 1  # no preference to learn from; the two queries are still spent
            continue
        win, lose = (c.dialogue_a, c.dialogue_b) if ra > rb else (c.dialogue_b, c.dialogue_a)
        prefs.append({"prompt": [{"role": m.role, "content": m.content} for m in win[:-1]],
                      "chosen": [{"role": "assistant", "content": win[-1].content}],
                      "rejected": [{"role": "assistant", "content": lose[-1].content}]})
    prompts = [{"prompt": [{"role": m.role, "content": m.content} for m in p.history], "info": p.info} for p in prefixes]
    return prefs, prompts, {"pairs_scored": n, "reward_queries": 2 * n, "ties_dropped": ties}


def base_row(base, judge) -> dict:
    """The base against itself: both sides sample with the same seeds, so every turn is a tie (50%)."""
    turns = []
    for h in (1, 2, 3):
        scores = [r for r in judge.score([d.upto(h) for d in base], [d.seed.info for d in base]) if r is not None]
        mean = sum(scores) / len(scores)
        turns.append({"turn": h, "win_rate": 0.5, "ci95": [0.5, 0.5], "n": len(scores), "reward_policy": mean,
                      "reward_base": mean})
    return {"turns": turns, "average_win_rate": 0.5, "samples": {}}


def reward_table(rows: dict) -> str:
    lines = ["| method | turn 1 | turn 2 | turn 3 |", "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{t['reward_policy']:.3f}" for t in r["turns"]) + " |")
    return "\n".join(lines)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--per-iteration", type=int, default=8, help="dialogues (REFUEL) / prompts (REBEL) per iteration")
    parser.add_argument("--eval", type=int, default=16, help="held-out seeds for the win rate")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--eta", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=2, help="passes over each iteration's pairs (DPO: over its data)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/refuel_proof"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from rlhf_engine.callbacks import NullReporter
    from rlhf_engine.data.formats import load_jsonl
    from rlhf_engine.evaluate_dialogue import evaluate_dialogue, format_table, rollout_side
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rewards import make_scorer
    from rlhf_engine.rollout.backend import stop_ids
    from rlhf_engine.rollout.dialogue import Sampling, seeds_from_examples
    from rlhf_engine.rollout.users import DatasetUsers
    from rlhf_engine.run import run
    from rlhf_engine.spec import LoraSpec, RewardSource, TrainConfig
    from rlhf_engine.tasks.remember_rules import EVAL_FILE, TRAIN_FILE

    class Log(NullReporter):
        def event(self, message, *, level="info", data=None):
            print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    budget = args.iterations * args.per_iteration
    train_rows = [json.loads(line) for line in TRAIN_FILE.read_text().splitlines()[:budget]]
    eval_rows = [json.loads(line) for line in EVAL_FILE.read_text().splitlines()[: args.eval]]
    train_file = write_jsonl(out / "train_seeds.jsonl", train_rows)
    write_jsonl(out / "eval_seeds.jsonl", eval_rows)

    model_dir = loading.materialise(ModelRegistry.load().get(MODEL), args.cache_dir)
    tok = loading.load_tokenizer(model_dir)
    model = loading.add_lora(loading.load_causal_lm(model_dir), LoraSpec(), seed=0)
    sampling = Sampling(args.max_new_tokens, args.temperature, 1.0, tuple(stop_ids(tok)))
    judge = make_scorer(RewardSource(type="function", name="remember_rules"), registry=ModelRegistry.load())
    timings: dict[str, float] = {}

    # Offline multi-turn data for the last-turn baselines (same seeds, same number of scored pairs).
    t = time.time()
    prefs, prompts, offline = offline_data(model, tok, seeds_from_examples(load_jsonl(train_file).examples),
                                           sampling, judge, args.seed)
    timings["offline_data"] = time.time() - t
    print(f"offline data: {offline} in {timings['offline_data']:.0f}s", flush=True)
    dpo_file = write_jsonl(out / "last_turn_dpo.jsonl", prefs)
    rebel_file = write_jsonl(out / "last_turn_prompts.jsonl", prompts)

    online_hp = {"iterations": args.iterations, "rollouts_per_iteration": args.per_iteration, "eta": args.eta,
                 "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "n_epochs": args.epochs,
                 "batch_size": 4, "learning_rate": args.lr, "reward": {"type": "function", "name": "remember_rules"}}
    # The in-job evaluation runs on one seed only: the comparable evaluation is the one below.
    one_dialogue = write_jsonl(out / "one_dialogue.jsonl", eval_rows[:1])
    one_prompt = write_jsonl(out / "one_prompt.jsonl", prompts[:1])
    jobs = {
        "last-turn DPO": TrainConfig(model=MODEL, training_file=dpo_file, seed=args.seed, output_dir=str(out / "dpo"),
                                     method={"type": "dpo", "dpo": {"hyperparameters": {
                                         "n_epochs": args.epochs, "batch_size": 4, "learning_rate": args.lr}}}),
        "REBEL (last turn)": TrainConfig(model=MODEL, training_file=rebel_file, validation_file=one_prompt, seed=args.seed,
                                         output_dir=str(out / "rebel"),
                                         method={"type": "rebel", "rebel": {"hyperparameters": online_hp}}),
        "REFUEL": TrainConfig(model=MODEL, training_file=train_file, validation_file=one_dialogue, seed=args.seed,
                              output_dir=str(out / "refuel"),
                              method={"type": "refuel", "refuel": {"hyperparameters": {
                                  **online_hp, "num_turns": 3, "user": {"type": "dataset"}}}}),
    }
    adapters, iterations = {}, {}
    if not prefs:
        print("no offline pair has a preference (all ties): last-turn DPO is left out", flush=True)
        del jobs["last-turn DPO"]
    for name, cfg in jobs.items():
        print(f"== {name}", flush=True)
        t = time.time()
        result = run(cfg, Log(), cache_dir=args.cache_dir)
        timings[name] = time.time() - t
        adapters[name] = result.adapter_dir
        iterations[name] = [{k: it.get(k) for k in ("iteration", "rollout/pairs", "rollout/reward_mean",
                                                     "rollout/reward_gap", "rollout/kl_to_base", "regression_loss",
                                                     "sign_agreement", "rollout/collect_seconds", "train_seconds",
                                                     "iteration_seconds")}
                            for it in result.summary.get("iterations", [])]

    # Per-turn win rates against the base, on held-out seeds.
    seeds = seeds_from_examples(load_jsonl(out / "eval_seeds.jsonl").examples)
    kw = dict(users=DatasetUsers(), sampling=sampling, num_turns=3, seed=args.seed)
    t = time.time()
    base = rollout_side(model, tok, seeds, use_adapter=False, **kw)
    rows = {"base": base_row(base, judge)}
    for name, adapter in adapters.items():
        set_peft_model_state_dict(model, load_file(adapter / "adapter_model.safetensors"))
        rows[name] = evaluate_dialogue(model, tok, seeds, judge=judge, base_dialogues=base, **kw)
    timings["evaluation"] = time.time() - t
    timings["total"] = time.time() - t_start

    table = format_table(rows) + "\n\nMean judge reward per turn (0..1):\n\n" + reward_table(rows)
    print(table)
    for name, its in iterations.items():
        for it in its:
            print(f"{name} iteration {it['iteration']}: {it['iteration_seconds']:.0f}s "
                  f"(collect {it['rollout/collect_seconds']:.0f}s, train {it['train_seconds']:.0f}s), "
                  f"pairs {it['rollout/pairs']:.0f}, mean reward {it['rollout/reward_mean']:.3f}, "
                  f"sign agreement {it['sign_agreement']:.2f}")
    print("timings (s):", {k: round(v) for k, v in timings.items()})
    (out / "table.md").write_text(table + "\n")
    (out / "result.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "reward_queries_per_method": 2 * budget,
        "offline": offline, "timings": timings, "iterations": iterations,
        "evaluation": {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in rows.items()},
        "samples": {k: v["samples"] for k, v in rows.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
