"""`remember_rules`: a 3-turn task whose reward depends on the whole dialogue.

The user reveals rules one turn at a time and expects every later reply to keep all of them:

    turn 1  "Hi, I'm Maya. Please call me by my name in every reply. <question>"   rule: name
    turn 2  "<question> Also, from now on keep each answer under 20 words."         rule: short
    turn 3  "<question>"                                                            (no new rule)

Per-turn rewards (one per assistant turn; a dialogue's reward is their sum, and REFUEL's return
of turn h the sum from h on, rlhf_engine/rewards/turns.py):

    r_j = mean_{rules revealed by user turn <= j} ok(rule, reply_j)
    ok(name, r)  = 1 if the name appears in r as a word, else 0
    ok(short, r) = clip(2 - words(r) / n, 0, 1)      (1 up to n words, 0 from 2n)

A sum, not a mean over turns: with a mean, the worth of one reply would shrink as the sampled
horizon H' grows, and the same action would earn different returns in different pairs.

Why earlier turns matter: the name is only ever said in turn 1 and the word limit in turn 2, so a
reply in turn 3 scores only if the policy carries both rules across the dialogue; and every
earlier reply counts in R, so a last-turn-only method cannot improve R through turns 1 and 2.
Rules are checked with plain string tests: cheap, deterministic, and exact.

    python -m rlhf_engine.tasks.remember_rules    # regenerate the shipped seed files
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

NAMES = ["Maya", "Omar", "Lena", "Tariq", "Sofia", "Kenji", "Amara", "Lucas", "Priya", "Mateo", "Nadia", "Elias",
         "Chloe", "Ravi", "Ingrid", "Diego", "Hana", "Felix", "Zara", "Jonas", "Aisha", "Bruno", "Yara", "Theo",
         "Mira", "Hugo", "Leila", "Oscar", "Nina", "Samir", "Greta", "Rafael"]
QUESTIONS = [
    "What is a good breakfast before a long walk?", "How can I sleep better?", "What should I cook tonight?",
    "How do I keep a plant alive indoors?", "What is a fun weekend activity?", "How can I learn to juggle?",
    "What is a good book for a train ride?", "How do I start running?", "How can I focus while studying?",
    "What is an easy way to save money?", "How do I make good tea?", "What should I pack for a picnic?",
    "How can I remember new words?", "What is a nice gift for a friend?", "How do I clean a bike chain?",
    "What is a good stretch after sitting all day?", "How can I stay calm before a talk?",
    "What game can I play with two friends?", "How do I keep bread fresh?", "What is a simple way to be tidy?",
    "How should I plan a short trip?", "What is a healthy snack?", "How do I write a thank-you note?",
    "What can I do on a rainy day?",
]
LIMITS = [15, 20, 25]


def _words(text: str) -> int:
    return len(text.split())


def rule_ok(rule: str, reply: str, info: dict) -> float:
    if rule == "name":
        return float(re.search(rf"\b{re.escape(info['name'])}\b", reply, re.IGNORECASE) is not None)
    if rule == "short":
        n = info["max_words"]
        return min(1.0, max(0.0, 2.0 - _words(reply) / n))
    raise ValueError(f"unknown rule {rule!r}")


def reward(messages: list[dict], info: dict) -> list[float]:
    """r_j in [0, 1] for each assistant turn j of the dialogue (see the module docstring)."""
    reveal = info["rules"]  # rule -> user turn that reveals it (1-based)
    user_turn, scores = 0, []
    for m in messages:
        if m["role"] == "user":
            user_turn += 1
        elif m["role"] == "assistant":
            live = [r for r, t in reveal.items() if t <= user_turn]
            scores.append(sum(rule_ok(r, m["content"], info) for r in live) / len(live) if live else 1.0)
    if not scores:
        raise ValueError("the dialogue has no assistant turn")
    return scores


def make_seed(rng: random.Random, name: str) -> dict:
    q1, q2, q3 = rng.sample(QUESTIONS, 3)
    n = rng.choice(LIMITS)
    return {"user_turns": [f"Hi, I'm {name}. Please call me by my name in every reply. {q1}",
                           f"{q2} Also, from now on keep each answer under {n} words.",
                           f"One more thing: {q3[0].lower()}{q3[1:]}"],
            "info": {"task": "remember_rules", "name": name, "max_words": n, "rules": {"name": 1, "short": 2}}}


def write_seeds(out_dir: Path, n_train: int = 64, n_eval: int = 32, seed: int = 0) -> None:
    """Train and eval seeds use disjoint names, so evaluation is on users never trained on."""
    rng = random.Random(seed)
    train_names, eval_names = NAMES[:24], NAMES[24:]
    for path, names, n in ((out_dir / "remember_rules_train.jsonl", train_names, n_train),
                           (out_dir / "remember_rules_eval.jsonl", eval_names, n_eval)):
        rows = [make_seed(rng, names[i % len(names)]) for i in range(n)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


DATA_DIR = Path(__file__).resolve().parent.parent / "datasets"
TRAIN_FILE, EVAL_FILE = DATA_DIR / "remember_rules_train.jsonl", DATA_DIR / "remember_rules_eval.jsonl"

if __name__ == "__main__":
    write_seeds(DATA_DIR)
    print(f"wrote {TRAIN_FILE} and {EVAL_FILE}")
