"""A bf16-saved reward model trains in fp32: transformers 5 loads a checkpoint in its own dtype by
default, and a bf16 score head rounds AdamW's small updates away (weights ~0.02, steps ~1e-5)."""

from __future__ import annotations

import pytest
import torch

from rlhf_engine.algorithms.reward_model import add_reward_lora, load_reward_model
from rlhf_engine.precision import Precision, decide
from rlhf_engine.rewards.model import load_registry_model, score_head, sequence_scores
from rlhf_engine.spec import LoraSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bf16_checkpoint(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    path = tmp_path_factory.mktemp("bf16-rm")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.bfloat16)
    model.save_pretrained(path)
    for f in tiny_model_dir.iterdir():  # the tokenizer files
        if f.suffix != ".safetensors" and f.name != "config.json":
            (path / f.name).write_bytes(f.read_bytes())
    return path


@pytest.mark.parametrize("precision", [decide("auto", "cpu"),
                                       # the CUDA rule (bf16 backbone under bf16 autocast), run on the CPU
                                       Precision("cpu", torch.bfloat16, torch.bfloat16)], ids=["fp32", "bf16"])
def test_trainable_parameters_are_fp32_and_the_head_learns(bf16_checkpoint, precision):
    model = add_reward_lora(load_reward_model(bf16_checkpoint, precision, seed=0), LoraSpec(r=4), seed=0)
    model.config.pad_token_id = 0
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    backbone = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and "score" not in n}
    assert backbone == {precision.weights}

    head = score_head(model.get_base_model()).modules_to_save["default"].weight
    before = head.detach().clone()
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-5)
    ids = torch.randint(3, 400, (4, 12), generator=torch.Generator().manual_seed(0))
    with precision.autocast():
        scores = sequence_scores(model, ids, torch.ones_like(ids))
    (scores[:2] - scores[2:]).sum().backward()
    optimizer.step()
    assert (head.detach() != before).all()  # every element moved by ~lr; none rounded away


def test_a_registry_reward_model_loads_in_fp32_on_cpu(bf16_checkpoint):
    model, _ = load_registry_model(bf16_checkpoint, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
