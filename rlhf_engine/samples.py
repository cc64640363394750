"""Samples while training: what the model says at each evaluation, not only its numbers.

A job with `eval_samples` N > 0 replies to N held-out prompts at every evaluation `train.fit`
runs (each `eval_interval`, and when a fit ends), and once before training with its adapter
disabled: the model the job starts from, reported as step 0, so every later step reads against it.

Which prompts: the validation file's first N. Without one, an offline method (DPO, SFT) takes the
training file's first N (it trains on every example, so these show what it learned, not how it
generalises); a method that collects dialogues takes the first N of the seeds it already holds out
of training for its closing evaluation (algorithms/online.py, `training_and_eval_seeds`).

How: with the rollout code the online methods collect with (`evaluate_dialogue.rollout_side`),
the policy greedy (temperature 0), so a step's replies are a function of its weights alone; a
simulated user samples with the job's seed, so a rerun replays it. An offline sample is a one-turn
dialogue of at most MAX_NEW_TOKENS; an online one a whole dialogue of the job's `num_turns`, each
reply within its `max_new_tokens`, as its rollouts are.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_engine.callbacks import Reporter, report_samples
from rlhf_engine.data import formats
from rlhf_engine.evaluate_dialogue import rollout_side
from rlhf_engine.rollout.dialogue import Dialogue, Sampling, Seed, seeds_from_examples
from rlhf_engine.rollout.generation import stop_ids
from rlhf_engine.rollout.users import DatasetUsers

# An offline method has no reply length of its own; this bounds what each evaluation costs.
MAX_NEW_TOKENS = 128


@dataclass
class Samples:
    """Replies to fixed prompts, reported at a step; called by train.fit at each evaluation."""

    tokenizer: object
    seeds: list[Seed]
    users: object
    sampling: Sampling
    num_turns: int
    seed: int
    reporter: Reporter
    dialogues: bool  # items carry the messages after the prompt (methods that train on dialogues)
    resumed: bool  # the job continues from a checkpoint

    def __call__(self, model, step: int, *, use_adapter: bool = True) -> None:
        rolled = rollout_side(model, self.tokenizer, self.seeds, use_adapter=use_adapter, users=self.users,
                              sampling=self.sampling, num_turns=self.num_turns, seed=self.seed)
        report_samples(self.reporter, step, [self._item(i, d) for i, d in enumerate(rolled)])

    def base(self, model) -> None:
        """Step 0: the model the job starts from. A resumed job reported it in its first attempt
        (before any checkpoint existed), so it is not generated again."""
        if not self.resumed:
            self(model, 0, use_adapter=False)

    def _item(self, index: int, dialogue: Dialogue) -> dict:
        start = len(dialogue.seed.history)
        after = [{"role": m.role, "content": m.content} for m in dialogue.messages[start:]]
        return {"index": index, "prompt": [{"role": m.role, "content": m.content} for m in dialogue.seed.history],
                "completion": after[0]["content"] if after else "", "dialogue": after if self.dialogues else None}


def greedy(tokenizer, max_new_tokens: int) -> Sampling:
    return Sampling(max_new_tokens, 0.0, 1.0, tuple(stop_ids(tokenizer)))


def offline_samples(job, tokenizer) -> Samples | None:
    """DPO's and SFT's samples: one reply per prompt of the validation (else training) file.
    The file is read again for its first prompts (one pass, no tokenising)."""
    n = job.hp.eval_samples
    if not n:
        return None
    config = job.config
    examples = formats.load_jsonl(config.validation_file or config.training_file).examples[:n]
    return Samples(tokenizer, seeds_from_examples(examples), DatasetUsers(), greedy(tokenizer, MAX_NEW_TOKENS),
                   1, config.seed, job.reporter, dialogues=False, resumed=job.resume_from is not None)


def dialogue_samples(job, tokenizer, eval_seeds: list[Seed], users, num_turns: int) -> Samples | None:
    """An online job's samples: whole dialogues from its first evaluation seeds, with its users."""
    n = job.hp.eval_samples
    if not n or not eval_seeds:
        return None
    return Samples(tokenizer, eval_seeds[:n], users, greedy(tokenizer, job.hp.max_new_tokens), num_turns,
                   job.config.seed, job.reporter, dialogues=True, resumed=job.resume_from is not None)
