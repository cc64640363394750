"""`method.type = "reward_model"`: a Bradley-Terry reward model, LoRA plus a scalar score head.

    loss = mean( -log sigmoid(r(x, y_w) - r(x, y_l)) )     (losses.bradley_terry)

r is AutoModelForSequenceClassification(num_labels=1) built from the base causal LM: its fresh
score head reads the hidden state of the last token of the prompt + completion (the end-of-turn
token). LoRA (task_type SEQ_CLS) adapts the transformer blocks; the score head is trained in full
and saved inside the adapter (peft modules_to_save), so <output_dir>/adapter is the whole reward
model on top of the base. Later REBEL/REFUEL jobs use it with RewardSource(type="job", name=<id>).

The backbone is loaded in the job's precision (rlhf_engine/precision.py), never in the
checkpoint's own dtype (transformers' default): a bf16 checkpoint would otherwise train its score
head in bf16, where AdamW's ~1e-4 updates to weights of ~0.02 round away, on CPU workers too.
The head is fp32 whatever the backbone's dtype; peft keeps LoRA weights in fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_engine import losses
from rlhf_engine.algorithms.evaluation import evaluate_in_batches
from rlhf_engine.data.batching import collate_pairs, padding_fraction
from rlhf_engine.job import Job, fit, load_pairs, save_result
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.precision import Precision
from rlhf_engine.rewards.model import score_head, sequence_scores


class BradleyTerry:
    def __init__(self, pairs, pad_id: int, eval_pairs=None):
        self.pairs, self.pad_id, self.eval_pairs = pairs, pad_id, eval_pairs or []

    @property
    def num_examples(self) -> int:
        return len(self.pairs)

    def _forward(self, model, pairs):
        """(mean loss, statistics as tensors on the model's device, tokens processed)."""
        batch = collate_pairs(pairs, self.pad_id)  # chosen rows, then rejected rows
        scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
        n = len(pairs)
        loss = losses.bradley_terry(scores[:n], scores[n:]).mean()
        with torch.no_grad():
            stats = {"accuracy": (scores[:n] > scores[n:]).float().mean(),
                     "margin": (scores[:n] - scores[n:]).mean(),
                     "padding_fraction": padding_fraction(batch)}
        return loss, stats, int(batch["attention_mask"].sum())

    def loss(self, model, indices):
        return self._forward(model, [self.pairs[i] for i in indices])

    def evaluate(self, model) -> dict[str, torch.Tensor] | None:
        def measure(pairs):
            loss, stats, _ = self._forward(model, pairs)
            return {"loss": loss, "accuracy": stats["accuracy"], "margin": stats["margin"]}

        return evaluate_in_batches(self.eval_pairs, measure)


def add_reward_lora(model, spec, *, seed: int):
    """LoRA on the backbone's linear layers (never the score head, which is trained in full)."""
    from rlhf_engine.models.loading import add_lora

    head_name = "score" if hasattr(model, "score") else "classifier"
    return add_lora(model, spec, seed=seed, task_type="SEQ_CLS", head=score_head(model), modules_to_save=[head_name])


def load_reward_model(model_dir: Path, precision: Precision, *, seed: int):
    """AutoModelForSequenceClassification(num_labels=1) with backbone weights in precision.weights and
    a fresh fp32 score head, its init a function of `seed`."""
    from transformers import AutoModelForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=precision.weights)
    score_head(model).float()
    return model.to(precision.device)


def train(job: Job) -> RunResult:
    """`method.type = "reward_model"`: a sequence classifier, not a causal LM, so its own loader."""
    from rlhf_engine.models import loading

    if job.config.init_adapters:
        raise JobInputError("a reward model starts from a registry model, not from a fine-tuned one")
    tokenizer = loading.load_tokenizer(job.model_dir)
    base = load_reward_model(job.model_dir, job.precision, seed=job.config.seed)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = add_reward_lora(base, job.hp.lora, seed=job.config.seed)
    job.report_loaded(model, " as a reward model")
    pairs, eval_pairs = load_pairs(job, tokenizer, expected_format="preference")
    return save_result(job, model,
                       fit(job, model, BradleyTerry(pairs, tokenizer.pad_token_id, eval_pairs), what="pairs"))
