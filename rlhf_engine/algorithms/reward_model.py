"""`method.type = "reward_model"`: a Bradley-Terry reward model, LoRA plus a scalar score head.

    loss = mean( -log sigmoid(r(x, y_w) - r(x, y_l)) )     (losses.bradley_terry)

r is AutoModelForSequenceClassification(num_labels=1) built from the base causal LM: its fresh
score head reads the hidden state of the last token of the prompt + completion (the end-of-turn
token). LoRA (task_type SEQ_CLS) adapts the transformer blocks; the score head is trained in full
and saved inside the adapter (peft modules_to_save), so <output_dir>/adapter is the whole reward
model on top of the base. Later REBEL/REFUEL jobs use it with RewardSource(type="job", name=<id>).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rlhf_engine import losses
from rlhf_engine.data.batching import collate_pairs, padding_fraction
from rlhf_engine.rewards.model import sequence_scores


class BradleyTerry:
    def __init__(self, pairs, pad_id: int, eval_pairs=None):
        self.pairs, self.pad_id, self.eval_pairs = pairs, pad_id, eval_pairs or []

    @property
    def num_examples(self) -> int:
        return len(self.pairs)

    def _forward(self, model, pairs):
        batch = collate_pairs(pairs, self.pad_id)  # chosen rows, then rejected rows
        scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])
        n = len(pairs)
        loss = losses.bradley_terry(scores[:n], scores[n:]).mean()
        with torch.no_grad():
            stats = {"accuracy": (scores[:n] > scores[n:]).float().mean().item(),
                     "margin": (scores[:n] - scores[n:]).mean().item(),
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
            for k, v in {"loss": loss.item(), "accuracy": stats["accuracy"], "margin": stats["margin"]}.items():
                totals[k] = totals.get(k, 0.0) + v * len(chunk) / n
        return {f"eval/{k}": v for k, v in totals.items()}


def add_reward_lora(model, spec, *, seed: int):
    """LoRA on the backbone's linear layers (never the score head, which is trained in full)."""
    import torch.nn as nn
    from peft import LoraConfig, get_peft_model

    head = model.score if hasattr(model, "score") else model.classifier
    head_name = "score" if hasattr(model, "score") else "classifier"
    targets = (sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                       if isinstance(m, nn.Linear) and m is not head})
               if spec.target_modules == "all-linear" else list(spec.target_modules))
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        bias="none", task_type="SEQ_CLS", modules_to_save=[head_name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def run_reward_model(config, model_dir: Path, reporter, *, cache_dir=None, resume_from=None):
    from transformers import AutoModelForSequenceClassification

    from rlhf_engine.data import formats
    from rlhf_engine.export import save_adapter
    from rlhf_engine.models import loading
    from rlhf_engine.run import RunResult, _tokenize_preferences
    from rlhf_engine.train import fit

    hp = config.method.hyperparameters
    out_dir = Path(config.output_dir)
    started = time.perf_counter()
    device = loading.pick_device()
    tokenizer = loading.load_tokenizer(model_dir)
    with torch.random.fork_rng(devices=[]):  # the new score head's init is a function of the job's seed
        torch.manual_seed(config.seed)
        base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).to(device)
    base.config.pad_token_id = tokenizer.pad_token_id
    model = add_reward_lora(base, hp.lora, seed=config.seed)
    reporter.event(f"Loaded {config.model} as a reward model on {device} in {time.perf_counter() - started:.1f}s",
                   data={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})

    train = formats.load_jsonl(config.training_file, expected_format="preference").examples
    evals = formats.load_jsonl(config.validation_file, expected_format="preference").examples if config.validation_file else []
    pairs = _tokenize_preferences(tokenizer, train, hp, reporter, "training")
    eval_pairs = _tokenize_preferences(tokenizer, evals, hp, reporter, "validation") if evals else []
    algo = BradleyTerry(pairs, tokenizer.pad_token_id, eval_pairs)
    reporter.event(f"Training reward_model on {algo.num_examples} pairs for {hp.epochs} epoch(s)")
    autocast = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else None
    result = fit(model, algo, hp, seed=config.seed, reporter=reporter, out_dir=out_dir, resume_from=resume_from,
                 autocast_dtype=autocast)
    if result.stopped:
        return RunResult(None, result.steps, result.trained_tokens, True, result.final_metrics)
    adapter = save_adapter(model, out_dir / "adapter", config.model)
    return RunResult(adapter, result.steps, result.trained_tokens, False, result.final_metrics)
