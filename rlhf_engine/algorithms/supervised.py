"""Supervised fine-tuning on preferred (or chat) completions: the warm start before DPO."""

from __future__ import annotations

import torch

from rlhf_engine.data.batching import collate, padding_fraction
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.logprobs import completion_logps_and_hits


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

    def loss(self, model, indices: list[int]):
        return self._forward(model, [self.examples[i] for i in indices])

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 8) -> dict[str, float] | None:
        if not self.eval_examples:
            return None
        batches = [self._forward(model, self.eval_examples[s:s + batch_size])
                   for s in range(0, len(self.eval_examples), batch_size)]
        return {"eval/loss": sum(loss.item() for loss, _, _ in batches) / len(batches),
                "eval/token_accuracy": sum(stats["token_accuracy"].item() for _, stats, _ in batches) / len(batches)}
