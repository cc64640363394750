"""Pilot for `carry_name`'s wording (bench/README.md): how often the base says the name per turn,
and whether a later turn says it without turn 1 having said it. The base only, nothing trained.

    python bench/carry_name_pilot.py [--temperature 0.7] [--dialogues 48]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDINGS = {  # the first is the original registration, the last the one adopted
    "call me by my name": "Hi, I'm {name}. Please call me by my name in every reply. {q}",
    "start with my name": "Hi, I'm {name}. Please start every reply with my name. {q}",
    "begin with '<name>,'": 'My name is {name}. Begin each answer with "{name},". {q}',
}


def rate(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--dialogues", type=int, default=48)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)

    from rlhf_engine.evaluate_dialogue import rollout_side
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.rollout.dialogue import Message, Sampling, Seed
    from rlhf_engine.rollout.generation import stop_ids
    from rlhf_engine.rollout.users import DatasetUsers
    from rlhf_engine.tasks.carry_name import said_name
    from rlhf_engine.tasks.remember_rules import NAMES, QUESTIONS

    model_dir = loading.materialise(ModelRegistry.load().get("smollm2-135m-instruct"), args.cache_dir)
    tok, model = loading.load_tokenizer(model_dir), loading.load_causal_lm(model_dir)
    sampling = Sampling(32, args.temperature, 1.0, tuple(stop_ids(tok)))
    rng = random.Random(0)
    print("| wording | turn 1 | turn 2 after turn 1 said it | turn 2 otherwise | "
          "turn 3 after turn 2 said it | turn 3 otherwise |")
    print("|---|---|---|---|---|---|")
    for label, wording in WORDINGS.items():
        seeds = []
        for i in range(args.dialogues):
            name, questions = NAMES[i % 24], rng.sample(QUESTIONS, 3)
            seeds.append(Seed((Message("user", wording.format(name=name, q=questions[0])),), tuple(questions[1:]),
                              {"task": "carry_name", "name": name}))
        dialogues = rollout_side(model, tok, seeds, use_adapter=False, users=DatasetUsers(), sampling=sampling,
                                 num_turns=3, seed=0)
        said = [[said_name(m.content, d.seed.info) for m in d.messages if m.role == "assistant"] for d in dialogues]
        print(f"| {label} | {rate([s[0] for s in said])} | {rate([s[1] for s in said if s[0]])} | "
              f"{rate([s[1] for s in said if not s[0]])} | {rate([s[2] for s in said if s[1]])} | "
              f"{rate([s[2] for s in said if not s[1]])} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
