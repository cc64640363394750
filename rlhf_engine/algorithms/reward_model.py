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

import time
from pathlib import Path

import torch

from rlhf_engine import losses
from rlhf_engine.data.batching import collate_pairs, padding_fraction
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

    @torch.no_grad()
    def evaluate(self, model, batch_size: int = 8):
        if not self.eval_pairs:
            return None
        totals, n = {}, len(self.eval_pairs)
        for s in range(0, n, batch_size):
            chunk = self.eval_pairs[s:s + batch_size]
            loss, stats, _ = self._forward(model, chunk)
            for k, v in {"loss": loss, "accuracy": stats["accuracy"], "margin": stats["margin"]}.items():
                totals[k] = totals.get(k, 0.0) + v.double() * len(chunk) / n
        return {f"eval/{k}": v for k, v in totals.items()}


def add_reward_lora(model, spec, *, seed: int):
    """LoRA on the backbone's linear layers (never the score head, which is trained in full)."""
    import torch.nn as nn
    from peft import LoraConfig, get_peft_model

    head = score_head(model)
    head_name = "score" if hasattr(model, "score") else "classifier"
    targets = (sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                       if isinstance(m, nn.Linear) and m is not head})
               if spec.target_modules == "all-linear" else list(spec.target_modules))
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        bias="none", task_type="SEQ_CLS", modules_to_save=[head_name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def load_reward_model(model_dir: Path, precision: Precision, *, seed: int):
    """AutoModelForSequenceClassification(num_labels=1) with backbone weights in precision.weights and
    a fresh fp32 score head, its init a function of `seed`."""
    from transformers import AutoModelForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=precision.weights)
    score_head(model).float()
    return model.to(precision.device)


def run_reward_model(config, model_dir: Path, reporter, precision: Precision, *, cache_dir=None, resume_from=None):
    from rlhf_engine.data import formats
    from rlhf_engine.export import save_adapter
    from rlhf_engine.models import loading
    from rlhf_engine.outcome import RunResult
    from rlhf_engine.data.pairs import tokenize_examples
    from rlhf_engine.train import fit

    hp = config.method.hyperparameters
    out_dir = Path(config.output_dir)
    started = time.perf_counter()
    tokenizer = loading.load_tokenizer(model_dir)
    base = load_reward_model(model_dir, precision, seed=config.seed)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = add_reward_lora(base, hp.lora, seed=config.seed)
    reporter.event(f"Loaded {config.model} as a reward model on {precision.device} ({precision.tag}) in "
                   f"{time.perf_counter() - started:.1f}s",
                   data={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})

    train = formats.load_jsonl(config.training_file, expected_format="preference").examples
    evals = formats.load_jsonl(config.validation_file, expected_format="preference").examples if config.validation_file else []
    pairs = tokenize_examples(tokenizer, train, hp, reporter, "training")
    eval_pairs = tokenize_examples(tokenizer, evals, hp, reporter, "validation") if evals else []
    algo = BradleyTerry(pairs, tokenizer.pad_token_id, eval_pairs)
    reporter.event(f"Training reward_model on {algo.num_examples} pairs for {hp.epochs} epoch(s)")
    result = fit(model, algo, hp, seed=config.seed, reporter=reporter, out_dir=out_dir, resume_from=resume_from,
                 precision=precision)
    if result.stopped:
        return RunResult(None, result.steps, result.trained_tokens, True, result.final_metrics)
    adapter = save_adapter(model, out_dir / "adapter", config.model)
    return RunResult(adapter, result.steps, result.trained_tokens, False, result.final_metrics)
