"""Our DPO step against TRL's DPOTrainer on the same model, batch and LoRA weights (fp32, tiny model).

Both sides read the same token ids: TRL's own collator (`DataCollatorForPreference`) pads our
`TokenizedPair`s and TRL's `compute_loss` (reference = the same PEFT model with its adapter
disabled, recomputed in-step as TRL does by default) gives its loss. Our side is `DPO.loss` with the
reference from `reference.compute`. LoRA B starts at zero (policy == reference, every gradient of A
zero), so the adapter is first set to random values: the test then checks a non-trivial margin
and non-zero gradients of every LoRA matrix.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from rlhf_engine import reference  # noqa: E402
from rlhf_engine.algorithms.dpo import DPO  # noqa: E402
from rlhf_engine.data.formats import Message, PreferenceExample  # noqa: E402
from rlhf_engine.data.tokenize import tokenize_pair  # noqa: E402
from rlhf_engine.model_registry import ModelRegistry  # noqa: E402
from rlhf_engine.models import loading  # noqa: E402
from rlhf_engine.spec import DpoHyperparameters  # noqa: E402

LOSSES = ["sigmoid", "ipo", "hinge"]
BETA = 0.5

_EXAMPLES = [
    ([("user", "What is the capital of France?")], "Paris is the capital of France.", "no"),
    ([("system", "Be polite."), ("user", "hello"), ("assistant", "hello, a helpful assistant answers."),
      ("user", "Please explain why the sky is blue.")],
     "Light scatters; shorter wavelengths scatter more.", "maybe the sky is blue because blue."),
    ([("user", "Numbers: 0 1 2 3 please")], "4 5 6 7 8 9.", "The quick brown fox jumps over the lazy dog."),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "models"
    model_dir = loading.materialise(ModelRegistry.load().get("tiny-random-llama"), cache)
    tokenizer = loading.load_tokenizer(model_dir)
    hp = DpoHyperparameters(max_length=256, max_prompt_length=192, beta=BETA)
    examples = [PreferenceExample(tuple(Message(r, c) for r, c in prompt), Message("assistant", w),
                                  Message("assistant", lo)) for prompt, w, lo in _EXAMPLES]
    pairs = [tokenize_pair(tokenizer, e, max_length=hp.max_length, max_prompt_length=hp.max_prompt_length)
             for e in examples]
    return model_dir, tokenizer, hp, pairs


@pytest.fixture(scope="module")
def trl_trainer(setup, tmp_path_factory):
    """One DPOTrainer for the module; each test sets the loss it checks (`trainer.loss_types`)."""
    model_dir, tokenizer, hp, _ = setup
    return _trainer(model_dir, tokenizer, hp, tmp_path_factory.mktemp("trl"))


def _trainer(model_dir, tokenizer, hp, out_dir):
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    base = loading.load_causal_lm(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=hp.lora.r, lora_alpha=hp.lora.alpha, lora_dropout=0.0,
                      target_modules=loading.lora_target_modules(base, hp.lora), bias="none", task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(out_dir), beta=BETA, loss_type=["sigmoid"], bf16=False, fp16=False,
                     gradient_checkpointing=False, max_length=hp.max_length, use_cpu=True, report_to=[],
                     per_device_train_batch_size=4, dataloader_num_workers=0, save_strategy="no", seed=0)
    # The constructor needs a dataset; the batch we score is built from our own token ids below.
    dummy = datasets.Dataset.from_list([{"prompt": "hello", "chosen": " yes", "rejected": " no"}])
    trainer = DPOTrainer(model=base, args=args, train_dataset=dummy, processing_class=tokenizer, peft_config=lora)
    model = trainer.model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial adapter: policy != reference
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return trainer, model


def _lora_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss_type", LOSSES)
def test_loss_and_lora_gradients_match_trl(setup, trl_trainer, loss_type):
    _, tokenizer, hp, pairs = setup
    hp = hp.model_copy(update={"loss_type": loss_type})
    trainer, model = trl_trainer
    trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
    model.train()

    # TRL: its collator and its loss (reference recomputed in-step with the adapter disabled).
    features = [{"prompt_ids": p.prompt, "chosen_ids": p.chosen, "rejected_ids": p.rejected} for p in pairs]
    batch = trainer.data_collator(features)
    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = _lora_grads(model)

    # Ours: cached reference (adapter disabled), then one DPO step on the same pairs.
    ref = reference.compute(model, pairs, tokenizer.pad_token_id).float()
    model.train()
    model.zero_grad(set_to_none=True)
    algo = DPO(hp, pairs, ref, tokenizer.pad_token_id)
    our_loss, stats, _ = algo.loss(model, list(range(len(pairs))))
    our_loss.backward()
    our_grads = _lora_grads(model)

    assert abs(stats["rewards/margins"]) > 1e-3  # the adapter really moves the policy off the reference
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert set(our_grads) == set(trl_grads) and len(our_grads) > 0
    nonzero = 0
    for name, g in trl_grads.items():
        assert torch.allclose(our_grads[name], g, atol=1e-5, rtol=0), name
        nonzero += bool(g.abs().max() > 1e-6)
    assert nonzero == len(trl_grads)  # every LoRA matrix gets a gradient
