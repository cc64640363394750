"""Rollout throughput: the engine's REFUEL/REBEL collection path against plain `generate` loops.

    python -m bench.rollouts                          # smollm2-135m-instruct, fp32, CPU
    python -m bench.rollouts --dialogues 16 --reps 3

Every side runs the same collection code (rlhf_engine.rollout.collect: REFUEL draws H' and h,
rolls the shared prefix out once and two continuations to H'; REBEL samples two responses per
prompt) on the same seeds (the bundled remember_rules dialogues, whose later user turns are
fixed), the same model (with a fresh LoRA adapter, as during training), the same sampling
settings (temperature, top_p, max_new_tokens, end-of-turn stop tokens) and the same seed. Only
the backend that turns prompt token ids into sampled completions differs:

- engine      rlhf_engine.rollout.hf_backend.HFBackend: all prompts of a turn in one batch, sorted
              by length, identical prompts (REFUEL's two continuations of one prefix, REBEL's two
              responses) prefilled once, finished rows leave the batch.
- plain loop  the peer the issue names: for each dialogue, `model.generate(do_sample=True)` with
              batch size 1 (transformers' own sampler and KV cache).
- hf batched  a stronger peer: one `model.generate` call per turn over all prompts, left-padded,
              no prefix sharing, rows that finish early keep decoding padding until all are done.

Tokens/s = completion tokens generated (stop token included) / wall seconds of the collection
call. Sampled texts differ between sides (different samplers), so token counts differ a little;
the rate is what is compared. Runs alternate sides within each repetition; tables give medians.
Writes bench/results/rollouts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rlhf_engine.rollout.generation import Completion  # noqa: E402
from rlhf_engine.rollout.hf_backend import HFBackend  # noqa: E402


class HFGenerate:
    """transformers' `model.generate`: one call per prompt (`per_dialogue`, the plain loop) or one
    call over all prompts of a turn, left-padded."""

    def __init__(self, model, pad_id: int, *, per_dialogue: bool):
        self.model, self.pad_id, self.per_dialogue = model, pad_id, per_dialogue

    @torch.no_grad()
    def generate(self, prompts_token_ids, *, max_new_tokens, temperature=1.0, top_p=1.0, stop_token_ids=(),
                 seed=0) -> list[Completion]:
        torch.manual_seed(seed)
        groups = [[p] for p in prompts_token_ids] if self.per_dialogue else [prompts_token_ids]
        return [c for group in groups
                for c in self._generate(group, max_new_tokens, temperature, top_p, list(stop_token_ids))]

    def _generate(self, prompts, max_new_tokens, temperature, top_p, stops) -> list[Completion]:
        width = max(len(p) for p in prompts)  # one prompt: no padding at all
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        seq = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                  top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                  pad_token_id=self.pad_id)
        return [_completion(row.tolist(), set(stops)) for row in seq[:, width:]]


def _completion(new_ids: list[int], stops: set[int]) -> Completion:
    """Cut at the first stop token (included); later positions are generate()'s padding."""
    for i, t in enumerate(new_ids):
        if t in stops:
            return Completion(new_ids[:i + 1], None, True)
    return Completion(new_ids, None, False)


class Counting:
    """Counts the completion tokens a backend produced."""

    def __init__(self, inner):
        self.inner, self.tokens, self.calls = inner, 0, 0

    def generate(self, prompts_token_ids, **kw) -> list[Completion]:
        outs = self.inner.generate(prompts_token_ids, **kw)
        self.tokens += sum(len(o.token_ids) for o in outs)
        self.calls += 1
        return outs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dialogues", type=int, default=8, help="REFUEL dialogues / REBEL prompts per collection")
    parser.add_argument("--turns", type=int, default=3, help="REFUEL horizon H")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sides", default="engine,plain_loop,hf_batched")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rlhf_engine.data.formats import load_jsonl
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rollout.collect import collect_rebel, collect_refuel
    from rlhf_engine.rollout.dialogue import Roller, Sampling, seeds_from_examples
    from rlhf_engine.rollout.generation import stop_ids
    from rlhf_engine.rollout.users import DatasetUsers
    from rlhf_engine.spec import LoraSpec
    from rlhf_engine.tasks.remember_rules import TRAIN_FILE

    model_dir = loading.materialise(ModelRegistry.load().get(args.model), args.cache_dir)
    tok = loading.load_tokenizer(model_dir)
    model = loading.add_lora(loading.load_causal_lm(model_dir), LoraSpec(), seed=0)
    model.eval()
    seeds = seeds_from_examples(load_jsonl(TRAIN_FILE).examples)[: args.dialogues]
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, tuple(stop_ids(tok)))
    backends = {"engine": lambda: HFBackend(model, tok.pad_token_id),
                "plain_loop": lambda: HFGenerate(model, tok.pad_token_id, per_dialogue=True),
                "hf_batched": lambda: HFGenerate(model, tok.pad_token_id, per_dialogue=False)}
    sides = [s for s in args.sides.split(",") if s]
    collections = {
        "refuel": lambda roller, rep: collect_refuel(roller, seeds, num_turns=args.turns, seed=rep),
        "rebel": lambda roller, rep: collect_rebel(roller, seeds, seed=rep),
    }

    runs = []
    for rep in range(args.reps):
        for algo, collect in collections.items():
            for side in sides:
                backend = Counting(backends[side]())
                roller = Roller(tok, backend, DatasetUsers(), sampling)
                started = time.perf_counter()
                pairs = collect(roller, rep)
                seconds = time.perf_counter() - started
                runs.append({"rep": rep, "algorithm": algo, "side": side, "pairs": len(pairs),
                             "tokens": backend.tokens, "generate_calls": backend.calls,
                             "seconds": round(seconds, 3), "tokens_per_s": round(backend.tokens / seconds, 2)})
                print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for algo in collections:
        rates = {s: statistics.median(r["tokens_per_s"] for r in runs if r["algorithm"] == algo and r["side"] == s)
                 for s in sides}
        summary[algo] = {"tokens_per_s": rates}
        if "engine" in rates:
            summary[algo]["engine_over"] = {s: round(rates["engine"] / rates[s], 2) for s in sides if s != "engine"}

    import transformers

    report = {"command": " ".join(["python -m bench.rollouts", *sys.argv[1:]]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
                          "load_avg_at_end": os.getloadavg()},
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "summary": summary, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollouts.json").write_text(json.dumps(report, indent=1) + "\n")
    md = [f"# Rollout throughput (`{report['command']}`)", "",
          f"{args.model}, fp32, {args.threads} torch threads, {platform.platform()}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}. {args.dialogues} remember_rules seeds, H={args.turns}, "
          f"max_new_tokens={args.max_new_tokens}, temperature={args.temperature}, top_p={args.top_p}; "
          f"median of {args.reps} alternated runs.", "",
          "| collection | " + " | ".join(f"{s} tokens/s" for s in sides) + " | "
          + " | ".join(f"engine / {s}" for s in sides if s != "engine") + " |",
          "|---" * (1 + len(sides) + len([s for s in sides if s != "engine"])) + "|"]
    for algo, s in summary.items():
        md.append(f"| {algo} | " + " | ".join(f"{s['tokens_per_s'][x]:.1f}" for x in sides) + " | "
                  + " | ".join(f"{v:.2f}x" for v in s.get("engine_over", {}).values()) + " |")
    (args.out / "rollouts.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
