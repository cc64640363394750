"""Prefix-shared packing (rlhf_engine/packing.py) computes what the plain padded layout computes.

Tiny random Llama, fp32, a non-trivial LoRA adapter: per-sequence log-prob sums, token counts,
per-token log-probs, the DPO loss and every LoRA gradient agree within 1e-5; reference log-probs
agree with packing on and off.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rlhf_engine import reference  # noqa: E402
from rlhf_engine.algorithms.dpo import DPO  # noqa: E402
from rlhf_engine.data.batching import collate_pairs  # noqa: E402
from rlhf_engine.data.tokenize import TokenizedPair  # noqa: E402
from rlhf_engine.logprobs import completion_logps  # noqa: E402
from rlhf_engine.model_registry import ModelRegistry  # noqa: E402
from rlhf_engine.models import loading  # noqa: E402
from rlhf_engine.packing import _place, pack_pairs  # noqa: E402
from rlhf_engine.spec import DpoHyperparameters, LoraSpec  # noqa: E402

# (prompt, chosen, rejected) lengths: one-token prompt, one-token completions, long shared prompt.
SHAPES = [(5, 3, 7), (40, 1, 4), (1, 6, 2), (9, 9, 9), (3, 12, 1), (25, 2, 2)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model_dir = loading.materialise(ModelRegistry.load().get("tiny-random-llama"),
                                    tmp_path_factory.getbasetemp() / "models")
    m = loading.add_lora(loading.load_causal_lm(model_dir, dtype=torch.float32),
                         LoraSpec(r=4, alpha=8, target_modules="all-linear"), seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = lambda k: torch.randint(3, 400, (k,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(tok(p), tok(c), tok(r)) for p, c, r in SHAPES]


def test_layout():
    pairs = _pairs()
    batch = pack_pairs(pairs, pad_id=0)
    n = len(pairs)
    assert batch["num_seqs"] == 2 * n
    assert batch["tokens"] == sum(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    assert batch["targets"].numel() == sum(len(p.chosen) + len(p.rejected) for p in pairs)
    assert 0.0 <= batch["padding_fraction"] < 0.5
    # rows never exceed the longest segment; deterministic
    assert batch["input_ids"].shape[1] == max(sum(s) for s in SHAPES)
    again = pack_pairs(pairs, pad_id=0)
    assert all(torch.equal(batch[k], again[k]) for k in ("input_ids", "attention_mask", "pred_index"))
    assert _place([5, 3, 5, 2], 8) == [[0, 1], [2, 3]]
    # a rejected token never sees a chosen token of its pair
    p = pairs[0]
    one = pack_pairs([p], pad_id=0)
    P, C = len(p.prompt), len(p.chosen)
    mask = one["attention_mask"][0, 0]
    assert not mask[P + C:, P:P + C].any()
    assert mask[P + C:, :P].all() and mask[P:P + C, :P].all()
    r0, batch = 0, one
    assert batch["position_ids"][r0, P + C].item() == P


def test_packed_logps_and_gradients_match_plain(model):
    pairs = _pairs()
    model.zero_grad(set_to_none=True)
    plain = completion_logps(model, collate_pairs(pairs, 0), return_token_logps=True)
    (plain[0] * torch.linspace(0.5, 1.5, plain[0].numel())).sum().backward()
    g_plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    model.zero_grad(set_to_none=True)
    packed = completion_logps(model, pack_pairs(pairs, 0, row_capacity=60), return_token_logps=True)
    (packed[0] * torch.linspace(0.5, 1.5, packed[0].numel())).sum().backward()
    g_packed = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    assert torch.allclose(plain[0], packed[0], atol=1e-5, rtol=0)
    assert torch.equal(plain[1], packed[1])
    # per-token values: the same multiset per sequence (plain orders by row position, packed by sequence)
    for s in range(2 * len(pairs)):
        a = plain[2][plain[3] == s]
        b = packed[2][packed[3] == s]
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    for name, g in g_plain.items():
        assert torch.allclose(g, g_packed[name], atol=1e-5, rtol=0), name


def _masked_pairs():
    """_pairs() whose completions hold context-only tokens (a multi-turn completion's user turns),
    the first and the last token among them on some sides."""
    g = torch.Generator().manual_seed(3)
    flags = lambda ids: (torch.rand(len(ids), generator=g) < 0.6).tolist()  # noqa: E731
    out = []
    for i, p in enumerate(_pairs(2)):
        chosen = flags(p.chosen)
        if i % 2 and len(chosen) > 1:
            chosen[0], chosen[-1] = False, True
        chosen[-1] = chosen[-1] or not any(chosen)
        rejected = flags(p.rejected) if i != 3 else None  # None: every token a target
        if rejected is not None and not any(rejected):
            rejected[0] = True
        out.append(TokenizedPair(p.prompt, p.chosen, p.rejected, chosen_mask=chosen, rejected_mask=rejected))
    return out


def test_masked_completions_packed_match_plain(model):
    pairs = _masked_pairs()
    results = []
    for batch in (collate_pairs(pairs, 0), pack_pairs(pairs, 0, row_capacity=60)):
        model.zero_grad(set_to_none=True)
        sums, counts = completion_logps(model, batch)
        (sums * torch.linspace(0.5, 1.5, sums.numel())).sum().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        results.append((sums.detach(), counts, grads))
    (plain, plain_counts, g_plain), (packed, packed_counts, g_packed) = results
    # Only the flagged tokens count, in both layouts ...
    expected = [sum(p.chosen_mask) for p in pairs] + [
        len(p.rejected) if p.rejected_mask is None else sum(p.rejected_mask) for p in pairs]
    assert plain_counts.tolist() == packed_counts.tolist() == expected
    # ... and they are the same log-probs and gradients.
    assert torch.allclose(plain, packed, atol=1e-5, rtol=0)
    for name, g in g_plain.items():
        assert torch.allclose(g, g_packed[name], atol=1e-5, rtol=0), name
    # A masked sum is the unmasked per-token log-probs at the flagged positions: a context-only
    # token moves no target and still conditions the ones after it.
    with torch.no_grad():
        unmasked = pack_pairs([TokenizedPair(p.prompt, p.chosen, p.rejected) for p in pairs], 0)
        _, _, token_logps, seq = completion_logps(model, unmasked, return_token_logps=True)
    for s, mask in enumerate([p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs]):
        per_token = token_logps[seq == s]
        picked = per_token if mask is None else per_token[torch.tensor(mask)]
        assert picked.sum().item() == pytest.approx(packed[s].item(), abs=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_step_same_with_and_without_packing(model, loss_type):
    pairs = _pairs(1)
    ref = reference.compute(model, pairs, 0, packing=False).float()
    assert torch.allclose(ref, reference.compute(model, pairs, 0, batch_size=4, packing=True).float(), atol=1e-5)
    model.train()
    hp = DpoHyperparameters(beta=0.3, loss_type=loss_type)
    results = []
    for packing in (False, True):
        model.zero_grad(set_to_none=True)
        algo = DPO(hp, pairs, ref + 0.5, 0, packing=packing)  # shifted reference: a non-zero margin
        loss, stats, tokens = algo.loss(model, [4, 0, 2, 5])
        loss.backward()
        results.append((loss.item(), stats, tokens,
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (l0, s0, t0, g0), (l1, s1, t1, g1) = results
    assert l0 == pytest.approx(l1, abs=1e-5)
    assert s0["rewards/margins"] == pytest.approx(s1["rewards/margins"], abs=1e-5)
    prompts = sum(len(pairs[i].prompt) for i in [4, 0, 2, 5])
    assert t1 == t0 - prompts  # the prompt is processed once, not twice
    assert s1["padding_fraction"] < s0["padding_fraction"]
    for name, g in g0.items():
        assert torch.allclose(g, g1[name], atol=1e-5, rtol=0), name


@pytest.mark.parametrize("packing", [False, True])
def test_logprob_forward_builds_no_kv_cache(model, packing):
    """A training forward has no use for a KV cache; building one costs memory kept for the backward."""
    pairs = _pairs()
    batch = pack_pairs(pairs, 0) if packing else collate_pairs(pairs, 0)
    caches = []
    hook = model.get_base_model().get_decoder().register_forward_hook(
        lambda _module, _args, out: caches.append(out.past_key_values))
    try:
        with torch.no_grad():
            completion_logps(model, batch)
    finally:
        hook.remove()
    assert caches == [None]
