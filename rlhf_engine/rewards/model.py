"""Sequence-classification reward models: a registry entry of kind reward_model, or the LoRA
adapter + score head trained by a previous `reward_model` job.

The score of a sequence is the score head applied to the hidden state of its last real token
(end of the final turn). We take that position from the attention mask instead of searching
for the pad id, because many chat tokenizers pad with their end-of-turn token.

Models load in the dtype rlhf_engine/precision.py picks for the device (fp32 on CPU), never in
the checkpoint's own dtype (transformers' default): a bf16 checkpoint stays slow and coarse on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhf_engine.layout import ADAPTER
from rlhf_engine.rewards.turns import differences, turn_cuts


def score_head(model):
    """The scalar head of a sequence classifier (Llama-style `score`, BERT-style `classifier`)."""
    return model.score if hasattr(model, "score") else model.classifier


def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[rows] scalar scores for right-padded rows; only the last token's hidden state is projected."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(lm, lm.base_model_prefix)
    device = next(lm.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    # No KV cache in a scoring forward (decoders build one by default); encoders have no such option.
    no_cache = {"use_cache": False} if hasattr(lm.config, "use_cache") else {}
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **no_cache).last_hidden_state
    last = attention_mask.sum(-1) - 1
    return score_head(lm)(hidden[torch.arange(len(last), device=device), last]).squeeze(-1).float()


class SequenceScorer:
    """Scores rendered dialogues with a sequence-classification model (batched, no grad)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 8, max_length: int = 4096):
        self.model, self.tokenizer, self.batch_size, self.max_length = model.eval(), tokenizer, batch_size, max_length

    def encode(self, messages) -> list[int]:
        text = self.tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                  tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.max_length:]  # keep the end: the turns being judged

    def score_turns(self, dialogues, infos, turns: list[int]) -> list[list[float] | None]:
        """Per-turn rewards as differences of the scores of the dialogue cut after each turn."""
        cuts = [turn_cuts(d, k) for d, k in zip(dialogues, turns)]
        flat = self.score([c for cs in cuts for c in cs], [])
        out, pos = [], 0
        for cs in cuts:
            out.append(differences(flat[pos:pos + len(cs)]))
            pos += len(cs)
        return out

    @torch.no_grad()
    def score(self, dialogues, infos) -> list[float | None]:
        from rlhf_engine.data.batching import collate

        rows = [self.encode(d) for d in dialogues]
        out: list[float | None] = []
        for s in range(0, len(rows), self.batch_size):
            batch = collate([([], r) for r in rows[s:s + self.batch_size]], self.tokenizer.pad_token_id)
            scores = sequence_scores(self.model, batch["input_ids"], batch["attention_mask"])
            out += [v if v == v else None for v in scores.tolist()]  # NaN -> failed
        return out


def load_registry_model(model_dir: Path, device: str):
    from transformers import AutoModelForSequenceClassification

    from rlhf_engine.models.loading import load_tokenizer
    from rlhf_engine.precision import decide

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1,
                                                               dtype=decide("auto", device).weights).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_job_model(artifacts_dir: Path, registry, cache_dir, device: str):
    """A `reward_model` job's output: <artifacts>/adapter (LoRA + score head) over its base model."""
    from peft import PeftModel

    from rlhf_engine.models.loading import materialise

    adapter = Path(artifacts_dir) / ADAPTER
    base_name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model, tokenizer = load_registry_model(materialise(registry.get(base_name), cache_dir), device)
    return PeftModel.from_pretrained(model, adapter).to(device), tokenizer
