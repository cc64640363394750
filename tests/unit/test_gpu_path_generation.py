"""What runs differently on a GPU, checked as far as a CPU can: inputs follow the model's device,
vLLM's engine stays in-process inside a daemonic job process, bf16 only where it is native, and a
merged export keeps the base's dtype.

The tests marked `gpu` need a CUDA GPU: the CPU suite deselects them (pyproject.toml's addopts)
and the prepared GPU check runs them (`pytest -m gpu`): sampling with generators on
the model's device (a CPU generator crashed CUDA sampling at the first token), loading straight
onto the GPU. That the weights never sit whole in host RAM, and vLLM's in-process engine inside a
real Celery worker, only a GPU machine with vLLM installed can show.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

torch = pytest.importorskip("torch")

from rlhf_engine.evals.concise import kl_to_base  # noqa: E402
from rlhf_engine.export import merge_adapter_dir, save_adapter  # noqa: E402
from rlhf_engine.models import loading  # noqa: E402
from rlhf_engine.precision import bf16_supported, decide  # noqa: E402
from rlhf_engine.rollout.hf_backend import HFBackend, row_uniforms  # noqa: E402
from rlhf_engine.rollout.vllm_backend import engine_environment  # noqa: E402
from rlhf_engine.spec import LoraSpec  # noqa: E402


def cuda(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


class _InputsSeen(Exception):
    pass


class _ModelOnMeta(torch.nn.Module):
    """A model on another device than the CPU's tensors: `meta`, the one a CPU machine has."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))

    def generate(self, input_ids, attention_mask, **_):
        raise _InputsSeen(input_ids.device, attention_mask.device)


def test_kl_to_base_sends_its_prompts_to_the_models_device(tiny_model_dir):
    with pytest.raises(_InputsSeen) as seen:
        kl_to_base(_ModelOnMeta(), loading.load_tokenizer(tiny_model_dir), "What is 2 + 2?", samples=2,
                   max_new_tokens=4, seed=0)
    assert seen.value.args == (torch.device("meta"),) * 2


def _report_engine_environment(conn):
    conn.send(engine_environment())
    conn.close()


def test_vllm_engine_runs_in_process_inside_a_daemonic_job_process():
    billiard = pytest.importorskip("billiard")  # Celery's process pool: a job runs in its daemonic child
    assert engine_environment() == {}  # a plain process may start vLLM's engine-core child
    parent, child = billiard.Pipe()
    proc = billiard.Process(target=_report_engine_environment, args=(child,), daemon=True)
    proc.start()
    try:
        assert parent.poll(30)
        assert parent.recv() == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    finally:
        proc.join(30)


def test_bf16_only_where_the_gpu_computes_it_natively(monkeypatch):
    # A pre-Ampere GPU: torch answers yes only when emulation counts.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not bf16_supported("cuda")
    assert decide("auto", "cuda").weights == torch.float32 and decide("auto", "cuda").compute is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert bf16_supported("cuda:0") and not bf16_supported("cpu")
    assert decide("auto", "cuda").weights == torch.bfloat16


def test_a_bf16_base_merges_to_bf16_weights(tiny_model_dir, tmp_path):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    loading.load_causal_lm(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base_dir)
    loading.load_tokenizer(tiny_model_dir).save_pretrained(base_dir)
    model = loading.add_lora(loading.load_causal_lm(base_dir, dtype=torch.bfloat16), LoraSpec(), seed=0)
    with torch.no_grad():  # a non-zero update, so the merge changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_adapter(model, adapter_dir, "tiny-random-llama")
    expected = model.merge_and_unload().state_dict()

    merged = load_file(merge_adapter_dir(base_dir, adapter_dir, tmp_path / "merged") / "model.safetensors")
    assert {t.dtype for t in merged.values()} == {torch.bfloat16}
    base = load_file(base_dir / "model.safetensors")
    changed = [k for k in merged if not torch.equal(merged[k], base[k])]
    assert changed and all(torch.equal(merged[k], expected[k]) for k in changed)


@cuda
def test_loads_onto_the_gpu_and_samples_there(tiny_model_dir):
    model = loading.load_causal_lm(tiny_model_dir, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert model.dtype == (torch.bfloat16 if bf16_supported("cuda") else torch.float32)
    assert row_uniforms([1, 2], 3, torch.device("cuda")).device.type == "cuda"
    backend = HFBackend(model, loading.load_tokenizer(tiny_model_dir).pad_token_id)
    kw = dict(max_new_tokens=4, temperature=1.0, top_p=0.9, stop_token_ids=[], seed=[3, 4])
    out = backend.generate([[5, 6, 7], [5, 6, 7]], **kw)
    assert [len(o.token_ids) for o in out] == [4, 4]
    assert [o.token_ids for o in backend.generate([[5, 6, 7], [5, 6, 7]], **kw)] == [o.token_ids for o in out]
