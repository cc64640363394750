"""Compute efficiency of the engine's DPO step: useful FLOP/s over the measured matmul peak.

    python -m bench.flops                  # smollm2-135m-instruct, fp32, CPU threads as torch sets them
    python -m bench.flops --steps 3 --batch-size 4

Peak: the best of several `torch.matmul` of two 4096x4096 fp32 matrices (2*4096^3 FLOP each), in
the same process, dtype and thread count as the step.

Useful FLOPs of one DPO training step (the reference log-probs are cached, so no reference
forward is counted or run), per *real* token t of the prefix-shared pack (the prompt once,
then chosen, then rejected; no padding), with
    N_lin  = weights of the linear layers of the transformer blocks (frozen),
    N_lora = LoRA A and B weights (trained), d = hidden size, V = vocabulary,
    k_t    = keys token t attends to (its prompt prefix and earlier tokens of its own branch),
    A      = n_layers * n_heads * head_dim  (attention width summed over layers):
  forward   2*N_lin + 2*N_lora + 4*A*k_t                    (linears, LoRA, QK^T and PV)
  backward  2*N_lin + 4*N_lora + 8*A*k_t                    (activation grads through frozen
                                                              linears; LoRA input + weight grads;
                                                              attention grads for Q, K, V)
plus, for each completion token only (the LM head runs nowhere else): 2*d*V forward + 2*d*V
backward (gradient w.r.t. the hidden state; the head is frozen). Norms, rotary, activations and
the softmax are not counted. Frozen weights get no weight gradients, so the usual 6*N rule
would overstate the work: it is 4*N_lin + 6*N_lora here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def matmul_peak(n: int = 4096, reps: int = 6) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def model_counts(model) -> dict:
    import torch.nn as nn

    lm = model.get_base_model()
    cfg = lm.config
    head = lm.get_output_embeddings()
    n_lin = sum(m.weight.numel() for name, m in lm.named_modules()
                if isinstance(m, nn.Linear) and m is not head and "lora_" not in name)
    n_lora = sum(p.numel() for name, p in lm.named_parameters() if "lora_" in name)
    head_dim = getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return {"n_lin": n_lin, "n_lora": n_lora, "d": cfg.hidden_size, "vocab": cfg.vocab_size,
            "attn_width": cfg.num_hidden_layers * cfg.num_attention_heads * head_dim}


def step_flops(batch: dict, c: dict) -> float:
    mask = batch["attention_mask"][:, 0]  # [rows, L, L]
    pad = batch["input_ids"].numel() - batch["tokens"]
    attn_keys = mask.sum().item() - pad  # sum of k_t; a padding position sees only itself: drop those
    tokens = batch["tokens"]
    completions = batch["targets"].numel()
    linear = (4 * c["n_lin"] + 6 * c["n_lora"]) * tokens
    attention = 12 * c["attn_width"] * attn_keys
    head = 4 * c["d"] * c["vocab"] * completions
    return linear + attention + head


def main(argv=None) -> None:
    import torch

    from bench import workloads
    from bench.dpo_vs_trl import LORA, MAX_LENGTH, MAX_PROMPT, _machine, _pairs, _versions
    from rlhf_engine.algorithms.dpo import DPO
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading
    from rlhf_engine.packing import pack_pairs
    from rlhf_engine.spec import DpoHyperparameters, LoraSpec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="/tmp/mc")
    args = ap.parse_args(argv)

    model_dir = loading.materialise(ModelRegistry.load().get("smollm2-135m-instruct"), Path(args.cache_dir))
    model = loading.add_lora(loading.load_causal_lm(model_dir), LoraSpec(**LORA), seed=args.seed)
    model.train()
    counts = model_counts(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    work = Path(tempfile.mkdtemp(prefix="bench-flops-"))
    peak_before = matmul_peak()
    rows = {}
    for name in ("W1", "W2"):
        data = workloads.write(name, args.pairs, args.seed, work / f"{name}.jsonl")
        tokenizer, _, pairs = _pairs(model_dir, data)
        hp = DpoHyperparameters(max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT)
        algo = DPO(hp, pairs, torch.zeros(len(pairs), 2), tokenizer.pad_token_id, packing=True)
        times, flops, tokens = [], [], []
        for step in range(args.steps + 1):  # step 0 warms up
            idx = [(step * args.batch_size + k) % len(pairs) for k in range(args.batch_size)]
            batch = pack_pairs([pairs[i] for i in idx], tokenizer.pad_token_id)
            t = time.perf_counter()
            loss, _, _ = algo.loss(model, idx)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t
            if step:
                times.append(dt)
                flops.append(step_flops(batch, counts))
                tokens.append(batch["tokens"])
        rows[name] = {"steps": args.steps, "step_s": statistics.median(times),
                      "useful_flops_per_step": statistics.median(flops),
                      "useful_flop_per_s": sum(flops) / sum(times), "tokens_per_s": sum(tokens) / sum(times)}
    peak = max(peak_before, matmul_peak())
    for row in rows.values():
        row["fraction_of_peak"] = row["useful_flop_per_s"] / peak
    result = {"benchmark": "flops", "machine": _machine(), "versions": _versions(), "counts": counts,
              "matmul_peak_flop_per_s": peak, "settings": vars(args), "workloads": rows,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flops_cpu.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "flops_cpu.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r) -> str:
    m, c = r["machine"], r["counts"]
    lines = [f"## Compute efficiency of the DPO step (CPU fp32, {r['finished']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; load average at start "
             f"{tuple(round(x, 1) for x in m.get('load_average_at_start', ()))}",
             f"Model: smollm2-135m-instruct, N_lin={c['n_lin']/1e6:.1f}M, N_lora={c['n_lora']/1e6:.2f}M, "
             f"d={c['d']}, V={c['vocab']}; matmul peak (4096^2 fp32) {r['matmul_peak_flop_per_s']/1e9:.1f} GFLOP/s",
             "", "| workload | batch | step s (median) | useful GFLOP/step | useful GFLOP/s | tokens/s "
                 "| % of matmul peak |",
             "|---|---|---|---|---|---|---|"]
    for name, row in r["workloads"].items():
        lines.append(f"| {name} | {r['settings']['batch_size']} | {row['step_s']:.1f} | "
                     f"{row['useful_flops_per_step']/1e9:.0f} | {row['useful_flop_per_s']/1e9:.1f} | "
                     f"{row['tokens_per_s']:.0f} | {row['fraction_of_peak']:.0%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
