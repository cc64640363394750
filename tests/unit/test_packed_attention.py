"""The packed layout's attention mask (rlhf_engine/packing.py) built where the model runs, and its
flex_attention form (rlhf_engine/attention.py) equal to the dense one.

On CPU: the mask lands on the model's device (shown with the meta device), the BlockMask's rule
is the dense mask element for element, and flex_attention under that BlockMask computes what
SDPA computes under the dense mask (forward: PyTorch 2.13 has no flex backward on CPU). The whole
model through the flex path, log-probs and LoRA gradients against the plain layout, needs CUDA:
the last test, skipped without it, is the GPU check.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_engine.data.batching import collate_pairs
from rlhf_engine.data.tokenize import TokenizedPair
from rlhf_engine.packing import dense_mask, pack_pairs
from rlhf_engine.pair_batches import make_batch

# (prompt, chosen, rejected) lengths; rows are packed to 64, so there are padding tokens too.
SHAPES = [(5, 3, 7), (40, 1, 4), (1, 6, 2), (9, 9, 9), (3, 12, 1), (25, 2, 2), (60, 2, 1)]


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = lambda k: torch.randint(3, 400, (k,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(tok(p), tok(c), tok(r)) for p, c, r in SHAPES]


def test_the_mask_is_built_on_the_models_device():
    on_meta = torch.nn.Linear(1, 1, device="meta")  # a device nothing is copied to by accident
    batch, _, _ = make_batch(_pairs(), 0, True, on_meta)
    assert batch["attention_mask"].device.type == "meta"
    assert batch["attention_mask"].shape[-1] == batch["input_ids"].shape[1]


def test_block_mask_is_the_dense_mask():
    from torch.nn.attention.flex_attention import create_mask

    batch = pack_pairs(_pairs(), 0)
    flex = pack_pairs(_pairs(), 0, block_mask=True)["attention_mask"]
    rows, width = batch["input_ids"].shape
    assert torch.equal(create_mask(flex.mask_mod, rows, 1, width, width, device="cpu"), batch["attention_mask"])
    assert torch.equal(dense_mask(batch["segment_ids"], batch["branch_ids"]), batch["attention_mask"])


def test_flex_attention_under_the_block_mask_equals_sdpa_under_the_dense_one():
    from torch.nn.attention.flex_attention import flex_attention

    dense = pack_pairs(_pairs(), 0)["attention_mask"]
    flex = pack_pairs(_pairs(), 0, block_mask=True)["attention_mask"]
    rows, _, width, _ = dense.shape
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(rows, 4, width, 16, generator=g) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    with torch.no_grad():
        got = flex_attention(q, k, v, block_mask=flex)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_flex_is_refused_off_cuda(tiny_model_dir):
    from rlhf_engine.attention import enable_flex
    from rlhf_engine.models import loading

    with pytest.raises(ValueError, match="CUDA"):
        enable_flex(loading.load_causal_lm(tiny_model_dir, dtype=torch.float32))


@pytest.mark.gpu  # deselected from the CPU suite; the GPU check runs `pytest -m gpu`
@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention has no backward pass on CPU")
def test_packed_flex_logps_and_gradients_match_plain_sdpa(tiny_model_dir):
    from rlhf_engine.attention import enable_flex, uses_flex
    from rlhf_engine.logprobs import completion_logps
    from rlhf_engine.models import loading
    from rlhf_engine.spec import LoraSpec

    def lora_model(flex: bool):
        base = loading.load_causal_lm(tiny_model_dir, dtype=torch.float32, device="cuda")
        if flex:
            enable_flex(base)
        model = loading.add_lora(base, LoraSpec(r=4, alpha=8), seed=0)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return model

    pairs = _pairs()
    results = []
    for flex, batch_of in ((False, lambda m: collate_pairs(pairs, 0)),
                           (True, lambda m: make_batch(pairs, 0, True, m)[0])):
        model = lora_model(flex)
        assert uses_flex(model) == flex
        sums, counts = completion_logps(model, batch_of(model))
        (sums * torch.linspace(0.5, 1.5, sums.numel(), device="cuda")).sum().backward()
        results.append((sums.detach(), counts, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (plain, c0, g0), (flex, c1, g1) = results
    assert torch.equal(c0, c1)
    assert torch.allclose(plain, flex, atol=1e-4, rtol=0)
    for name, g in g0.items():
        assert torch.allclose(g, g1[name], atol=1e-4, rtol=0), name
