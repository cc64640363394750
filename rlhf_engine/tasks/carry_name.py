"""`carry_name`: a multi-turn task where the first reply earns nothing and decides what comes later.

    turn 1  'My name is Maya. Begin each answer with "Maya,". <question>'
    turn k  "<question>"                                                  (k = 2..H, no reminder)

Per-turn rewards (rlhf_engine/rewards/turns.py sums them into returns):

    r_1 = 0                                  whatever the first reply says
    r_k = 1 if reply k says the name, else 0 (k >= 2; a whole word, any case)

The name is asked for once, at turn 1, and never again, so a later reply says it almost only when
the dialogue already does. Measured on smollm2-135m-instruct (48 dialogues, T = 0.7, 32 tokens,
bench/README.md "pilot"): turn 1 said the name in 30 of 48; turn 2 in 22 of the 30 whose turn 1
had and in 0 of the other 18; turn 3 in 21 of 22 after a turn 2 that had, 1 of 26 otherwise.
Saying the name at turn 1 is then an action whose worth shows only in the future: REFUEL's
return of turn 1 (r_1 + r_2 + ...) sees it; a method trained on the immediate reward of turn 1
(always 0) cannot. Success per turn (`said_name`) is the task's own measure, turn 1 included.

    python -m rlhf_engine.tasks.carry_name    # regenerate the shipped seed files
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlhf_engine.tasks.remember_rules import DATA_DIR, NAMES, QUESTIONS, rule_ok

TURNS = 3
TRAIN_FILE, EVAL_FILE = DATA_DIR / "carry_name_train.jsonl", DATA_DIR / "carry_name_eval.jsonl"


def said_name(reply: str, info: dict) -> bool:
    return rule_ok("name", reply, info) == 1.0


def reward(messages: list[dict], info: dict) -> list[float]:
    """r_k for each assistant turn k of the dialogue (see the module docstring)."""
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not replies:
        raise ValueError("the dialogue has no assistant turn")
    return [0.0] + [float(said_name(r, info)) for r in replies[1:]]


def make_seed(rng: random.Random, name: str, turns: int = TURNS) -> dict:
    questions = rng.sample(QUESTIONS, turns)
    return {"user_turns": [f'My name is {name}. Begin each answer with "{name},". {questions[0]}',
                           *questions[1:]],
            "info": {"task": "carry_name", "name": name}}


def write_seeds(out_dir: Path, n_train: int = 128, n_eval: int = 64, seed: int = 0) -> None:
    """Train and eval seeds use disjoint names, so evaluation is on users never trained on."""
    rng = random.Random(seed)
    for path, names, n in ((out_dir / TRAIN_FILE.name, NAMES[:24], n_train),
                           (out_dir / EVAL_FILE.name, NAMES[24:], n_eval)):
        rows = [make_seed(rng, names[i % len(names)]) for i in range(n)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write_seeds(DATA_DIR)
    print(f"wrote {TRAIN_FILE} and {EVAL_FILE}")
