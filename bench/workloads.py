"""Deterministic synthetic preference workloads for the DPO benchmarks (OpenAI preference JSONL).

W1 single-turn: one user prompt and two assistant replies, lengths drawn log-uniformly over wide
   ranges (prompt ~10-200 words, replies ~5-150 words), like common single-turn preference sets.
W2 multi-turn: 2-5 shared (user, assistant) exchanges of 15-50 words per message, then a short
   final user turn (5-15 words) and short replies (3-20 words): the shared history is most of
   each pair's tokens, like multi-turn dialogue preference sets.

Text is drawn from a fixed word list with `random.Random(seed)`, so a (workload, n, seed) triple
always gives the same file. With SmolLM2's tokenizer one word is about one token (plus the chat
template's ~30 tokens of system prompt and role markers).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

_WORDS = (
    "the of and to in is that it for on with as was at by be this are from or have an they which one you "
    "were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three model data answer "
    "question reason light water energy system value result method train learn test policy reward network "
    "small large fast slow clear simple careful example number point place part group problem fact"
).split()


def _loguniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def _text(rng: random.Random, words: int) -> str:
    out, sentence = [], 0
    for _ in range(max(1, words)):
        w = rng.choice(_WORDS)
        out.append(w.capitalize() if sentence == 0 else w)
        sentence += 1
        if sentence >= rng.randint(6, 16):
            out[-1] += "."
            sentence = 0
    if not out[-1].endswith("."):
        out[-1] += "."
    return " ".join(out)


def _pair(chosen: str, rejected: str) -> tuple[str, str]:
    return (chosen, rejected) if chosen != rejected else (chosen, rejected + " No.")


def w1(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"W1-{seed}")
    rows = []
    for _ in range(n):
        prompt = _text(rng, _loguniform(rng, 10, 200))
        chosen, rejected = _pair(_text(rng, _loguniform(rng, 5, 150)), _text(rng, _loguniform(rng, 5, 150)))
        rows.append({"input": {"messages": [{"role": "user", "content": prompt}]},
                     "preferred_output": [{"role": "assistant", "content": chosen}],
                     "non_preferred_output": [{"role": "assistant", "content": rejected}]})
    return rows


def w2(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"W2-{seed}")
    rows = []
    for _ in range(n):
        messages = []
        for _turn in range(rng.randint(2, 5)):
            messages.append({"role": "user", "content": _text(rng, rng.randint(15, 50))})
            messages.append({"role": "assistant", "content": _text(rng, rng.randint(15, 50))})
        messages.append({"role": "user", "content": _text(rng, rng.randint(5, 15))})
        chosen, rejected = _pair(_text(rng, rng.randint(3, 20)), _text(rng, rng.randint(3, 20)))
        rows.append({"input": {"messages": messages},
                     "preferred_output": [{"role": "assistant", "content": chosen}],
                     "non_preferred_output": [{"role": "assistant", "content": rejected}]})
    return rows


WORKLOADS = {"W1": w1, "W2": w2}


def write(name: str, n: int, seed: int, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in WORKLOADS[name](n, seed)))
    return path
