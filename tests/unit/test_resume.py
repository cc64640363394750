"""A run stopped at a checkpoint and resumed ends with the same adapter as an uninterrupted run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.run import run
from rlhf_engine.spec import TrainConfig


class StopAfter(NullReporter):
    """Asks the loop to stop once `steps` optimizer steps have been reported."""

    def __init__(self, steps: int):
        self.steps, self.seen, self.checkpoints = steps, 0, []

    def metrics(self, step, values, *, total_steps=None):
        if not any(k.startswith("eval/") for k in values):
            self.seen = step

    def checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, path))

    def should_stop(self):
        return self.seen >= self.steps


def write_dataset(path, n=10):
    rows = [{"prompt": f"Say the number {i}.", "chosen": f"{i}", "rejected": f"The number is {i + 1}, I think."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(tmp_path, data, out, method_type="dpo"):
    hp = {"n_epochs": 2, "batch_size": 3, "learning_rate": 5e-3, "checkpoint_interval": 2,
          "lr_scheduler_type": "cosine", "warmup_ratio": 0.2, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
    return TrainConfig(model="tiny-random-llama", training_file=str(data), seed=3, output_dir=str(tmp_path / out),
                       method={"type": method_type, method_type: {"hyperparameters": hp}})


def adapter(path):
    return load_file(path / "adapter_model.safetensors")


@pytest.mark.parametrize("method_type", ["dpo", "supervised"])
def test_resume_matches_uninterrupted(tmp_path, model_cache, tiny_model_dir, method_type):
    data = write_dataset(tmp_path / "train.jsonl")
    full = run(config(tmp_path, data, "full", method_type), NullReporter(), cache_dir=model_cache)
    assert full.steps == 8 and full.adapter_dir is not None  # ceil(10 / 3) * 2 epochs

    # Stop mid-epoch at step 5 (an odd step: the stop itself writes the checkpoint), then resume.
    stopper = StopAfter(5)
    stopped = run(config(tmp_path, data, "parts", method_type), stopper, cache_dir=model_cache)
    assert stopped.stopped and stopped.adapter_dir is None
    step, path = stopper.checkpoints[-1]
    assert step == 5
    resumed = run(config(tmp_path, data, "parts", method_type), NullReporter(), cache_dir=model_cache,
                  resume_from=path)
    assert resumed.steps == 8 and resumed.trained_tokens == full.trained_tokens

    a, b = adapter(full.adapter_dir), adapter(resumed.adapter_dir)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    # And training moved the weights at all (LoRA B starts at zero).
    assert max(t.abs().max().item() for k, t in a.items() if "lora_B" in k) > 1e-4


def test_resume_from_periodic_checkpoint(tmp_path, model_cache, tiny_model_dir):
    data = write_dataset(tmp_path / "train.jsonl")
    full = run(config(tmp_path, data, "full"), NullReporter(), cache_dir=model_cache)
    periodic = sorted((tmp_path / "full" / "checkpoints").iterdir())
    assert [p.name for p in periodic] == ["step-000002", "step-000004", "step-000006", "step-000008"]
    resumed = run(config(tmp_path, data, "again"), NullReporter(), cache_dir=model_cache, resume_from=periodic[1])
    a, b = adapter(full.adapter_dir), adapter(resumed.adapter_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert torch.load(periodic[1] / "state.pt", weights_only=True)["step"] == 4


class RunsCodeWhenUnpickled:
    """A pickle payload: unpickling it calls `open(marker, "w")`, i.e. creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_tampered_checkpoint_is_refused_not_executed(tmp_path, model_cache, tiny_model_dir):
    """Checkpoint state is read with torch.load(weights_only=True): a state.pt carrying code (say,
    planted in a shared artifact store) fails the resume instead of running that code."""
    import pickle

    data = write_dataset(tmp_path / "train.jsonl")
    run(config(tmp_path, data, "full"), NullReporter(), cache_dir=model_cache)
    checkpoint = tmp_path / "full" / "checkpoints" / "step-000004"
    marker = tmp_path / "code-ran"
    torch.save({"step": 4, "optimizer": RunsCodeWhenUnpickled(marker)}, checkpoint / "state.pt")

    with pytest.raises(pickle.UnpicklingError):
        run(config(tmp_path, data, "again"), NullReporter(), cache_dir=model_cache, resume_from=checkpoint)
    assert not marker.exists()
