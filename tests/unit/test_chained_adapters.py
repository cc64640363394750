"""Chained jobs in the engine: a job that starts from another job's adapter trains on top of it,
measures its reference against it, and exports one adapter that loads on the original base."""

import json
import math

import pytest
import torch

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.export import combine_adapters
from rlhf_engine.models import loading
from rlhf_engine.run import run
from rlhf_engine.spec import LoraSpec, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = torch.tensor([[1, 5, 9, 14, 3, 7, 22, 2]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def random_adapter(tiny_model_dir, out, *, r, alpha, targets, seed):
    """A saved LoRA adapter with non-zero B (a fresh one is the identity)."""
    model = loading.add_lora(loading.load_causal_lm(tiny_model_dir), LoraSpec(r=r, alpha=alpha, target_modules=targets),
                             seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out, safe_serialization=True)
    return out


def test_combined_adapter_is_exactly_the_sum_of_its_parts(tmp_path, tiny_model_dir):
    from peft import PeftModel

    # Different ranks, scales and target modules: the combination must still be exact.
    first = random_adapter(tiny_model_dir, tmp_path / "a", r=2, alpha=8, targets=["q_proj", "v_proj"], seed=1)
    second = random_adapter(tiny_model_dir, tmp_path / "b", r=4, alpha=4, targets=["v_proj", "down_proj"], seed=2)
    both = combine_adapters([first, second], tmp_path / "both")

    stacked = loading.merge_adapters(loading.load_causal_lm(tiny_model_dir), [first, second])
    combined = PeftModel.from_pretrained(loading.load_causal_lm(tiny_model_dir), both)
    base = loading.load_causal_lm(tiny_model_dir)
    assert (logits(combined) - logits(stacked)).abs().max() < 1e-4
    assert (logits(combined) - logits(base)).abs().max() > 1e-2  # the adapters do change the model
    config = json.loads((both / "adapter_config.json").read_text())
    assert config["r"] == 6 and sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]


def write_pairs(path):
    rows = [{"prompt": f"Say {i}.", "chosen": f"{i}", "rejected": f"Not {i}, I think."} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FirstLoss(NullReporter):
    def __init__(self):
        self.first = None

    def metrics(self, step, values, *, total_steps=None):
        if self.first is None and "loss" in values:
            self.first = float(values["loss"])


def test_a_chained_dpo_job_starts_from_its_parent_and_exports_one_adapter_for_the_base(tmp_path, model_cache,
                                                                                      tiny_model_dir):
    from peft import PeftModel

    parent = random_adapter(tiny_model_dir, tmp_path / "parent", r=4, alpha=8, targets="all-linear", seed=3)
    # A learning rate this small leaves the new update at ~0: the export must then be the parent.
    hp = {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-9, "beta": 0.1, "lora": {"r": 2, "alpha": 4}}
    config = TrainConfig(model="tiny-random-llama", training_file=str(write_pairs(tmp_path / "train.jsonl")),
                         output_dir=str(tmp_path / "out"), method={"type": "dpo", "dpo": {"hyperparameters": hp}},
                         init_adapters=[str(parent)])
    reporter = FirstLoss()
    result = run(config, reporter, cache_dir=model_cache)

    # The reference is the parent model: at the first step policy and reference agree, margin 0.
    assert reporter.first == pytest.approx(math.log(2), abs=1e-4)
    exported = PeftModel.from_pretrained(loading.load_causal_lm(tiny_model_dir), result.adapter_dir)
    with_parent = PeftModel.from_pretrained(loading.load_causal_lm(tiny_model_dir), parent)
    assert (logits(exported) - logits(with_parent)).abs().max() < 1e-3
    assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 6


def test_a_chained_supervised_job_trains_the_parent_model_not_the_base(tmp_path, model_cache, tiny_model_dir):
    parent = random_adapter(tiny_model_dir, tmp_path / "parent", r=4, alpha=8, targets="all-linear", seed=4)
    hp = {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-9}

    def first_loss(name, init):
        config = TrainConfig(model="tiny-random-llama", training_file=str(write_pairs(tmp_path / "train.jsonl")),
                             output_dir=str(tmp_path / name), init_adapters=init,
                             method={"type": "supervised", "supervised": {"hyperparameters": hp}})
        reporter = FirstLoss()
        run(config, reporter, cache_dir=model_cache)
        return reporter.first

    # The first step's loss is measured before any update: on the parent's weights, not the base's.
    assert abs(first_loss("chained", [str(parent)]) - first_loss("plain", [])) > 1e-2  # 0 if it were the base
