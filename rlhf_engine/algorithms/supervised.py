"""Supervised fine-tuning on preferred (or chat) completions: the warm start before DPO."""

from __future__ import annotations

import torch

from rlhf_engine.algorithms.evaluation import evaluate_in_batches
from rlhf_engine.data.batching import collate, padding_fraction
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.job import Job, fit, load_pairs, load_policy, save_result
from rlhf_engine.logprobs import completion_logps_and_hits
from rlhf_engine.outcome import RunResult
from rlhf_engine.samples import offline_samples


class SFT:
    def __init__(self, examples: list[TokenizedPair], pad_id: int, eval_examples: list[TokenizedPair] | None = None):
        self.examples, self.pad_id, self.eval_examples = examples, pad_id, eval_examples or []

    @property
    def num_examples(self) -> int:
        return len(self.examples)

    def _forward(self, model, examples):
        """Token-level mean NLL: -sum log pi(y_t) / number of completion tokens; and the share of
        completion tokens that are the model's argmax (`token_accuracy`, OpenAI's mean token accuracy)."""
        batch = collate([(e.prompt, e.chosen) for e in examples], self.pad_id)
        sums, counts, hits = completion_logps_and_hits(model, batch)
        tokens = counts.sum()
        stats = {"padding_fraction": padding_fraction(batch), "token_accuracy": hits / tokens}
        return -sums.sum() / tokens, stats, int(batch["attention_mask"].sum())

    def size(self, indices: list[int]) -> int:
        """What the loss is a mean of: completion tokens (after a non-empty prompt, each is a target).
        On N ranks a share of a micro-batch weighs its tokens' part (rlhf_engine/distributed.py)."""
        return sum(len(self.examples[i].chosen) for i in indices)

    def loss(self, model, indices: list[int]):
        return self._forward(model, [self.examples[i] for i in indices])

    def evaluate(self, model) -> dict[str, torch.Tensor] | None:
        """The mean over batches of each batch's token-level loss and accuracy (batches unweighted,
        as this method has always reported them)."""
        def measure(batch):
            loss, stats, _ = self._forward(model, batch)
            return {"loss": loss, "token_accuracy": stats["token_accuracy"]}

        return evaluate_in_batches(self.eval_examples, measure, weigh=lambda batch: 1)


def train(job: Job) -> RunResult:
    """`method.type = "supervised"`: SFT on the file's preferred (or chat) completions."""
    model, tokenizer = load_policy(job)
    pairs, eval_pairs = load_pairs(job, tokenizer)
    samples = offline_samples(job, tokenizer)
    if samples:
        samples.base(model)
    result = fit(job, model, SFT(pairs, tokenizer.pad_token_id, eval_pairs), samples=samples)
    return save_result(job, model, result, tokenizer=tokenizer)
