"""Build the bundled `concise` preference dataset (deterministic; rerun to regenerate the JSONL).

Property a program can check: a preferred answer is ONE sentence of at most 15 words that
contains the question's key fact. The rejected answer is smollm2-135m-instruct's own long answer
(sampled with a system prompt asking for detail), so the pair differs in the style the model
actually produces: off-policy negatives written by hand teach DPO to avoid those exact phrases
and leave the model's real habits untouched. Evaluation
(rlhf_engine/evals/concise.py) measures, on held-out questions: the share of answers with the
property, the share that still contain the key fact, and repetition.

    python -m rlhf_engine.evals.build_concise   # ~5 min on 2 CPU cores; needs the engine installed
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "datasets"  # rlhf_engine/datasets, shipped with the package

# (question, key fact that a correct answer must contain, concise answer)
FACTS = [
    ("What is the capital of France?", "Paris", "The capital of France is Paris."),
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "Rome", "Rome is the capital of Italy."),
    ("What is the capital of Spain?", "Madrid", "Madrid is the capital of Spain."),
    ("What is the capital of Germany?", "Berlin", "Berlin is the capital of Germany."),
    ("What is the capital of Canada?", "Ottawa", "The capital of Canada is Ottawa."),
    ("What is the capital of Egypt?", "Cairo", "Cairo is the capital of Egypt."),
    ("What is the capital of Kenya?", "Nairobi", "Nairobi is the capital of Kenya."),
    ("How many days are in a week?", "seven", "A week has seven days."),
    ("How many legs does a spider have?", "eight", "A spider has eight legs."),
    ("How many continents are there?", "seven", "There are seven continents."),
    ("What is the largest planet in our solar system?", "Jupiter",
     "Jupiter is the largest planet in our solar system."),
    ("What planet is known as the Red Planet?", "Mars", "Mars is known as the Red Planet."),
    ("What gas do plants absorb from the air?", "carbon dioxide", "Plants absorb carbon dioxide from the air."),
    ("What is the boiling point of water at sea level in Celsius?", "100",
     "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water in Celsius?", "0", "Water freezes at 0 degrees Celsius."),
    ("Who wrote Romeo and Juliet?", "Shakespeare", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the chemical symbol for gold?", "Au", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for water?", "H2O", "The chemical formula for water is H2O."),
    ("What is the largest ocean on Earth?", "Pacific", "The Pacific is the largest ocean on Earth."),
    ("What is the tallest mountain in the world?", "Everest", "Mount Everest is the tallest mountain in the world."),
    ("What is the longest river in Africa?", "Nile", "The Nile is the longest river in Africa."),
    ("What do bees make?", "honey", "Bees make honey."),
    ("What is the opposite of hot?", "cold", "The opposite of hot is cold."),
    ("What color do you get by mixing blue and yellow?", "green", "Mixing blue and yellow makes green."),
    ("How many hours are in a day?", "24", "A day has 24 hours."),
    ("What is 7 times 8?", "56", "Seven times eight is 56."),
    ("What is 12 plus 15?", "27", "Twelve plus fifteen is 27."),
    ("What is the square root of 81?", "9", "The square root of 81 is 9."),
    ("Which animal is known as the king of the jungle?", "lion", "The lion is known as the king of the jungle."),
    ("What is the main language spoken in Brazil?", "Portuguese", "The main language of Brazil is Portuguese."),
    ("What is the smallest prime number?", "2", "The smallest prime number is 2."),
    ("Which organ pumps blood through the body?", "heart", "The heart pumps blood through the body."),
    ("What is the hardest natural substance?", "diamond", "Diamond is the hardest natural substance."),
    ("How many minutes are in an hour?", "60", "An hour has 60 minutes."),
    ("What is the currency of Japan?", "yen", "The currency of Japan is the yen."),
    ("Which star is at the center of our solar system?", "Sun", "The Sun is at the center of our solar system."),
    ("What is frozen water called?", "ice", "Frozen water is called ice."),
    ("Who painted the Mona Lisa?", "Leonardo", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the capital of Australia?", "Canberra", "Canberra is the capital of Australia."),
    ("What is the capital of Russia?", "Moscow", "Moscow is the capital of Russia."),
    ("How many sides does a triangle have?", "three", "A triangle has three sides."),
    ("What is the largest mammal?", "blue whale", "The blue whale is the largest mammal."),
    ("What do caterpillars turn into?", "butterfl", "Caterpillars turn into butterflies or moths."),
    ("What is the capital of China?", "Beijing", "Beijing is the capital of China."),
    ("What is 9 minus 4?", "5", "Nine minus four is 5."),
    ("Which planet is closest to the Sun?", "Mercury", "Mercury is the closest planet to the Sun."),
    ("What is the capital of India?", "New Delhi", "New Delhi is the capital of India."),
    ("How many wheels does a bicycle have?", "two", "A bicycle has two wheels."),
    ("What is the capital of Mexico?", "Mexico City", "Mexico City is the capital of Mexico."),
    ("What is the capital of Greece?", "Athens", "Athens is the capital of Greece."),
    ("What is the capital of Portugal?", "Lisbon", "Lisbon is the capital of Portugal."),
    ("How many months are in a year?", "12", "A year has 12 months."),
    ("What is the opposite of up?", "down", "The opposite of up is down."),
    ("What is the capital of Norway?", "Oslo", "Oslo is the capital of Norway."),
    ("What is 6 times 7?", "42", "Six times seven is 42."),
]

VERBOSE_SYSTEM = "Answer in detail, with several sentences of explanation and context."

OPENERS = ["That's a great question, and I'm happy to help you think it through.",
           "Thank you so much for asking! There is a lot one could say about this topic.",
           "Well, this is something many people wonder about, and it deserves a careful answer.",
           "Certainly! Let me take a moment to walk you through this in some detail."]
CLOSERS = ["Of course, it is always a good idea to double-check with other reliable sources as well.",
           "I hope this lengthy explanation helps, and please feel free to ask any follow-up questions!",
           "There are many more interesting details, but that is the essence of it, more or less.",
           "Let me know if you would like me to elaborate further on any part of this answer."]


def verbose(answer: str, rng: random.Random) -> str:
    return (f"{rng.choice(OPENERS)} After considering the question from several angles, I believe that, "
            f"generally speaking, {answer[0].lower() + answer[1:]} {rng.choice(CLOSERS)}")


def model_answers(questions: list[str], seed: int = 0) -> list[str]:
    """The base model's own long answers: sampled, with a system prompt that asks for detail."""
    import torch

    from rlhf_engine.data.formats import Message
    from rlhf_engine.data.tokenize import render_prompt
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models.loading import load_causal_lm, load_tokenizer, materialise

    model_dir = materialise(ModelRegistry.load().get("smollm2-135m-instruct"))
    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    torch.manual_seed(seed)
    texts = [render_prompt(tokenizer, [Message("system", VERBOSE_SYSTEM), Message("user", q)]) for q in questions]
    tokenizer.padding_side = "left"  # one batched generate: every prompt ends where generation starts
    batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=0.7, max_new_tokens=80,
                             pad_token_id=tokenizer.pad_token_id)
    answers = []
    for row in out[:, batch.input_ids.shape[1]:]:
        reply = tokenizer.decode(row, skip_special_tokens=True).strip()
        # Cut a reply that ran out of tokens back to its last full sentence.
        answers.append(reply[: reply.rfind(".") + 1] if "." in reply else reply)
    return answers


def record(question: str, answer: str, rejected: str) -> dict:
    return {"input": {"messages": [{"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": answer}],
            "non_preferred_output": [{"role": "assistant", "content": rejected}]}


def main() -> None:
    rng = random.Random(0)
    facts = FACTS[:]
    rng.shuffle(facts)
    long_answers = model_answers([q for q, _, _ in facts])
    # A sampled answer can be short or cut to nothing; fall back to padded filler in that case.
    rejected = [r if len(r.split()) > 20 else verbose(a, rng) for (_, _, a), r in zip(facts, long_answers)]
    rows = [record(q, a, r) for (q, _, a), r in zip(facts, rejected)]
    write(HERE / "concise_train.jsonl", rows[16:])
    write(HERE / "concise_eval.jsonl", rows[:16])  # held out
    (HERE / "concise_eval_keys.json").write_text(json.dumps({q: k for q, k, _ in facts[:16]}, indent=1) + "\n")


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
