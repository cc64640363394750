"""Did DPO on the bundled `concise` dataset align the model, and did it stay good?

On held-out questions (rlhf_engine/datasets/concise_eval*.json[l]) for a base model and an adapter:
- property:   share of greedy answers that are ONE sentence of at most 15 words (what was preferred);
- correct:    share of greedy answers that contain the question's key fact (still right);
- repetition: share of answers in which some word 3-gram occurs twice ("Certainly!Certainly!");
- kl:         KL(pi_tuned || pi_base) per answer, Monte Carlo over sampled answers:
              mean over samples y ~ pi_tuned of sum_t [log pi_tuned(y_t|.) - log pi_base(y_t|.)].

    python -m rlhf_engine.evals.concise --model smollm2-135m-instruct --adapter DIR [--samples 4]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parent.parent / "datasets"
MAX_WORDS = 15


def has_property(text: str) -> bool:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    return len(sentences) == 1 and len(text.split()) <= MAX_WORDS


def is_correct(text: str, key: str) -> bool:
    return key.lower() in text.lower()


def is_repetitive(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(grams) != len(set(grams))


def held_out() -> list[tuple[str, str]]:
    keys = json.loads((DATA / "concise_eval_keys.json").read_text())
    return list(keys.items())


@torch.no_grad()
def kl_to_base(model, tokenizer, question: str, samples: int, max_new_tokens: int, seed: int) -> float:
    """Monte Carlo KL(pi || base) over `samples` sampled answers; the base is the adapter disabled."""
    from rlhf_engine.data.batching import collate
    from rlhf_engine.data.formats import Message
    from rlhf_engine.data.tokenize import render_prompt
    from rlhf_engine.logprobs import completion_logps

    prompt = tokenizer(render_prompt(tokenizer, [Message("user", question)]), add_special_tokens=False).input_ids
    torch.manual_seed(seed)
    ids = torch.tensor([prompt] * samples, device=next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0,
                         max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    rows = []
    for seq in out[:, len(prompt):].tolist():
        end = seq.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in seq else len(seq)
        rows.append((prompt, seq[:end]))
    batch = collate(rows, tokenizer.pad_token_id)
    policy, _ = completion_logps(model, batch)
    with model.disable_adapter():
        base, _ = completion_logps(model, batch)
    return (policy - base).mean().item()


def evaluate(model, tokenizer, *, samples: int = 4, max_new_tokens: int = 64, seed: int = 0,
             with_kl: bool = True) -> dict:
    from rlhf_engine.generate import answer

    rows = []
    for question, key in held_out():
        text = answer(model, tokenizer, [{"role": "user", "content": question}], max_new_tokens=max_new_tokens)
        row = {"question": question, "answer": text, "property": has_property(text),
               "correct": is_correct(text, key), "repetitive": is_repetitive(text)}
        if with_kl:
            row["kl"] = kl_to_base(model, tokenizer, question, samples, max_new_tokens, seed)
        rows.append(row)
    n = len(rows)
    summary = {"n": n, "property": sum(r["property"] for r in rows) / n, "correct": sum(r["correct"] for r in rows) / n,
               "repetitive": sum(r["repetitive"] for r in rows) / n}
    if with_kl:
        summary["kl"] = sum(r["kl"] for r in rows) / n
    return {"summary": summary, "answers": rows}


def main(argv=None) -> int:
    from peft import PeftModel

    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, load_tokenizer, materialise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", type=Path, help="adapter directory; omit to evaluate the base model")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args(argv)
    model_dir = materialise(ModelRegistry.load().get(args.model), args.cache_dir)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir).eval()
    with_kl = args.adapter is not None
    if with_kl:
        model = PeftModel.from_pretrained(model, args.adapter).eval()
    print(json.dumps(evaluate(model, tokenizer, samples=args.samples, with_kl=with_kl), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
