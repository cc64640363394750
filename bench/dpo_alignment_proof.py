"""Issue 3's proof that DPO aligns: train smollm2-135m-instruct on the bundled `concise` dataset
and compare base vs tuned on held-out questions (rlhf_engine/evals/concise.py).

    python bench/dpo_alignment_proof.py [--lr-multiplier 4] [--epochs 2] [--beta 0.3] [--loss-type hinge]
                                        [--loss-weights '{"sigmoid": 1, "sft": 1}']

Writes bench/results/dpo_alignment.{json,md} (or --results DIR). The base's answers are greedy,
so they are computed once and kept in --base-cache for the next run (delete it after a change to
rlhf_engine/evals/concise.py or to the model: the cache is not keyed on either).
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


def main() -> int:
    import torch
    import transformers
    from peft import PeftModel

    from rlhf_engine.callbacks import NullReporter
    from rlhf_engine.evals.concise import evaluate
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, load_tokenizer, materialise
    from rlhf_engine.run import run
    from rlhf_engine.spec import TrainConfig

    parser = argparse.ArgumentParser()
    # The defaults are the demo's (scripts/demo.py), chosen from a grid by a rule (bench/README.md).
    parser.add_argument("--lr-multiplier", type=float, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="the job's: LoRA init, data order (not the evaluation's)")
    parser.add_argument("--beta", type=float, default=0.3)
    parser.add_argument("--loss-type", default="hinge", help="sigmoid (DPO), hinge (SLiC), ipo, ...")
    parser.add_argument("--loss-weights", type=json.loads, default=None,
                        help='a weighted sum of losses as JSON, e.g. {"sigmoid": 1, "sft": 1}; overrides --loss-type')
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "dpo_alignment_proof")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--base-cache", type=Path, default=REPO / "runs" / "dpo_alignment_base.json")
    args = parser.parse_args()

    data = REPO / "rlhf_engine" / "datasets"
    hp = {"n_epochs": args.epochs, "batch_size": 8, "learning_rate_multiplier": args.lr_multiplier, "beta": args.beta,
          "loss_type": args.loss_type}
    if args.loss_weights:
        hp["loss_weights"] = args.loss_weights
    config = TrainConfig(model="smollm2-135m-instruct", training_file=str(data / "concise_train.jsonl"),
                         validation_file=str(data / "concise_eval.jsonl"), seed=args.seed, output_dir=str(args.out),
                         method={"type": "dpo", "dpo": {"hyperparameters": hp}})

    class StepTimes(NullReporter):
        times: list[float] = []

        def metrics(self, step, values, *, total_steps=None):
            if "step_time" in values:
                self.times.append(values["step_time"])

    started = time.time()
    reporter = StepTimes()
    result = run(config, reporter)
    train_seconds = time.time() - started

    model_dir = materialise(ModelRegistry.load().get(config.model))
    tokenizer = load_tokenizer(model_dir)
    if args.base_cache.exists():
        base = json.loads(args.base_cache.read_text())
    else:
        base = evaluate(load_causal_lm(model_dir).eval(), tokenizer, with_kl=False)
        args.base_cache.parent.mkdir(parents=True, exist_ok=True)
        args.base_cache.write_text(json.dumps(base, indent=1))
    tuned_model = PeftModel.from_pretrained(load_causal_lm(model_dir), result.adapter_dir).eval()
    tuned = evaluate(tuned_model, tokenizer)

    summary = result.summary
    report = {
        "command": (f"python bench/dpo_alignment_proof.py --lr-multiplier {args.lr_multiplier} "
                    f"--epochs {args.epochs} --beta {args.beta}"
                    + (f" --loss-weights '{json.dumps(args.loss_weights)}'" if args.loss_weights
                       else f" --loss-type {args.loss_type}")
                    + (f" --seed {args.seed}" if args.seed else "")),
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "hyperparameters": hp, "steps": result.steps, "train_seconds": round(train_seconds, 1),
        "median_step_seconds": sorted(reporter.times)[len(reporter.times) // 2] if reporter.times else None,
        "eval_reward_accuracy": summary.get("eval/rewards/accuracies"),
        "eval_margin": summary.get("eval/rewards/margins"),
        "base": base["summary"], "tuned": tuned["summary"],
        "examples": [{"question": b["question"], "base": b["answer"], "tuned": t["answer"]}
                     for b, t in zip(base["answers"][:4], tuned["answers"][:4])],
        "answers": [{"question": b["question"], "base": b, "tuned": t}
                    for b, t in zip(base["answers"], tuned["answers"])],
    }
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "dpo_alignment.json").write_text(json.dumps(report, indent=1) + "\n")
    b, t = base["summary"], tuned["summary"]
    md = [f"# DPO alignment proof ({report['command']})", "",
          f"{result.steps} steps, {train_seconds:.0f}s training on {platform.machine()} CPU "
          f"(median step {report['median_step_seconds']:.1f}s); held-out reward accuracy "
          f"{report['eval_reward_accuracy']:.2f}, margin {report['eval_margin']:.2f}.", "",
          "| held-out (16 questions) | base | tuned |", "|---|---|---|",
          f"| one sentence, <= 15 words (the preferred property) | {b['property']:.2f} | {t['property']:.2f} |",
          f"| contains the key fact (still correct) | {b['correct']:.2f} | {t['correct']:.2f} |",
          f"| repeats a 3-gram (degenerate) | {b['repetitive']:.2f} | {t['repetitive']:.2f} |",
          f"| KL(tuned \\|\\| base) per answer, nats | 0 | {t['kl']:.2f} |", ""]
    md += [f"- {e['question']}\n  - base: {e['base']}\n  - tuned: {e['tuned']}" for e in report["examples"]]
    (out / "dpo_alignment.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
