"""The prepared GPU check: every method on a CUDA device, one command, one table.

    bash bench/gpu_check.sh                 # on the GPU machine (installs the carried wheels first)
    python -m bench.gpu_check --dry         # the same sections on this CPU at toy sizes (CI runs it)

Sections run in this order, so that crashes report first, and a failing section never stops the
ones after it (its row says FAILED with the error; the exit status is 1 if any failed):

  1. versions and device
  2. tiny-model probes: bf16 base weights with fp32 LoRA; packed == plain log-probs and gradients
     (SDPA mask and, where it is on, flex_attention); the attention implementation in use; seeded
     sampling reproducible and independent of the other rows on the device; `pytest -m gpu`
  3. `rlhf_engine.run.run` on the tiny model: DPO (then resumed from its checkpoint), SFT, reward
     model, REBEL, REFUEL, one short run each
  4. a packed DPO step of 4 rows x 4096 tokens on a 1B-class random Llama (bench/gpu_model.py),
     bf16: peak memory and step time, SDPA mask against flex_attention
  5. `python -m bench.dpo_vs_trl --gpu` at a size that fits the time (needs trl)
  6. the DPO step of section 4's model on every GPU, LoRA under DDP and every weight under FSDP2,
     against one process: pairs/s per GPU and peak memory per rank (bench/gpu_ranks.py; one rank
     on a one-GPU machine)

The table goes to gpu_check[_dry].md in --out ($OUT when set, else bench/results/), with what
each row measured in the .json beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


class Table:
    """Rows of (section, check, result, detail); a check that raises becomes a FAILED row."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section: str, check: str, result: str, detail: str = "", **data) -> None:
        self.rows.append({"section": section, "check": check, "result": result, "detail": detail, **data})
        print(f"[{section}] {check}: {result} {detail}", flush=True)

    def run(self, section: str, fn, *args) -> None:
        started = time.perf_counter()
        try:
            fn(self, *args)
        except Exception as err:  # noqa: BLE001 -- the report must go on to the next section
            self.add(section, fn.__name__, "FAILED", f"{type(err).__name__}: {err}",
                     traceback=traceback.format_exc(limit=6))
        print(f"[{section}] done in {time.perf_counter() - started:.1f}s", flush=True)

    @property
    def failed(self) -> bool:
        return any(r["result"] == "FAILED" for r in self.rows)

    def markdown(self) -> str:
        lines = ["| section | check | result | detail |", "|---|---|---|---|"]
        lines += [f"| {r['section']} | {r['check']} | {r['result']} | {r['detail']} |" for r in self.rows]
        return "\n".join(lines)


def ok(condition: bool) -> str:
    return "ok" if condition else "FAILED"


# ------------------------------------------------------------------------------- 1. versions
def versions(table: Table, device: str) -> None:
    import importlib.metadata as md

    import torch

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "pydantic", "trl", "vllm"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "-"
    table.add("1 versions", "python / packages", "ok", f"python {platform.python_version()}; "
              + ", ".join(f"{k} {v}" for k, v in found.items()))
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        table.add("1 versions", "device", "ok", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                  f"capability {props.major}.{props.minor}, CUDA {torch.version.cuda}, "
                  f"bf16 native {torch.cuda.is_bf16_supported(including_emulation=False)}")
    else:
        table.add("1 versions", "device", "ok", "cpu (dry run)")


# ---------------------------------------------------------------------------- 2. tiny probes
def _tiny(cache: Path):
    from rlhf_engine.model_registry import ModelRegistry
    from rlhf_engine.models import loading

    return loading.materialise(ModelRegistry.load().get("tiny-random-llama"), cache)


def _random_pairs(lengths: list[tuple[int, int, int]], vocab: int, seed: int = 0):
    """Pairs of random token ids with these (prompt, chosen, rejected) lengths."""
    import torch

    from rlhf_engine.data.tokenize import TokenizedPair

    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(ids(p), ids(c), ids(r)) for p, c, r in lengths]


def weights_and_lora(table: Table, device: str, cache: Path) -> None:
    import torch

    from rlhf_engine import precision as precisions
    from rlhf_engine.models import loading
    from rlhf_engine.spec import LoraSpec

    p = precisions.decide("auto" if device == "cuda" else "bf16", device)
    model = loading.add_lora(loading.load_causal_lm(_tiny(cache), dtype=p.weights, device=p.device),
                             LoraSpec(r=4, alpha=8), seed=0)
    frozen = {q.dtype for q in model.parameters() if not q.requires_grad}
    trained = {q.dtype for q in model.parameters() if q.requires_grad}
    devices = {q.device.type for q in model.parameters()}
    want = torch.bfloat16 if device == "cuda" else torch.float32
    table.add("2 probes", "base weights / LoRA dtype", ok(frozen == {want} and trained == {torch.float32}
                                                          and devices == {device}),
              f"frozen {sorted(map(str, frozen))}, trainable {sorted(map(str, trained))}, on {sorted(devices)}; "
              f"precision {p.tag}")


def packed_equals_plain(table: Table, device: str, cache: Path) -> None:
    import torch

    from rlhf_engine.attention import enable_flex
    from rlhf_engine.data.batching import collate_pairs
    from rlhf_engine.logprobs import completion_logps
    from rlhf_engine.models import loading
    from rlhf_engine.packing import pack_pairs
    from rlhf_engine.spec import LoraSpec

    torch.backends.cuda.matmul.allow_tf32 = False  # an fp32 comparison: no TF32 rounding
    torch.backends.cudnn.allow_tf32 = False
    pairs = _random_pairs([(5, 3, 7), (40, 1, 4), (1, 6, 2), (9, 9, 9), (3, 12, 1), (25, 2, 2)], vocab=400)
    for flex in ((False, True) if device == "cuda" else (False,)):
        base = loading.load_causal_lm(_tiny(cache), dtype=torch.float32, device=device)
        if flex:
            enable_flex(base)  # before LoRA wrapping
        model = loading.add_lora(base, LoraSpec(r=4, alpha=8), seed=0)
        with torch.no_grad():
            for name, q in model.named_parameters():
                if "lora_B" in name:
                    q.normal_(0, 0.2)
        grads, logps = [], []
        for batch in (collate_pairs(pairs, 0),
                      pack_pairs(pairs, 0, row_capacity=60, device=torch.device(device), block_mask=flex)):
            model.zero_grad(set_to_none=True)
            lp = completion_logps(model, {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})[0]
            lp.sum().backward()
            logps.append(lp.detach())
            grads.append({n: q.grad.detach().clone() for n, q in model.named_parameters() if q.requires_grad})
        dlp = (logps[0] - logps[1]).abs().max().item()
        dg = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
        table.add("2 probes", f"packed == plain ({'flex_attention' if flex else 'SDPA mask'}, fp32)",
                  ok(dlp < 1e-4 and dg < 1e-4), f"largest log-prob difference {dlp:.1e}, gradient {dg:.1e}")


def attention_in_use(table: Table, device: str, cache: Path) -> None:
    import torch

    from rlhf_engine.attention import enable_flex, uses_flex
    from rlhf_engine.models import loading

    model = loading.load_causal_lm(_tiny(cache), dtype=torch.float32, device=device)
    plain = model.config._attn_implementation
    if device == "cuda":
        enable_flex(model)
    table.add("2 probes", "attention implementation", "ok",
              f"plain rows: {plain}; "
              f"packed rows: {'flex_attention BlockMask' if uses_flex(model) else 'SDPA with a dense mask'}")


def seeded_sampling(table: Table, device: str, cache: Path) -> None:
    from rlhf_engine.models import loading
    from rlhf_engine.rollout.hf_backend import HFBackend

    model_dir = _tiny(cache)
    model = loading.load_causal_lm(model_dir, device=device)
    tokenizer = loading.load_tokenizer(model_dir)
    prompts = [tokenizer.encode(t) for t in ("hello there", "a longer prompt about the weather today", "why")]
    backend = HFBackend(model, tokenizer.pad_token_id, batch_size=8)
    draw = lambda ps, seeds: [c.token_ids for c in backend.generate(  # noqa: E731
        ps, max_new_tokens=12, temperature=1.0, top_p=0.9, stop_token_ids=[], seed=seeds)]
    seeds = [11, 22, 33]
    first, again = draw(prompts, seeds), draw(prompts, seeds)
    alone = [draw([p], [s])[0] for p, s in zip(prompts, seeds)]
    table.add("2 probes", f"seeded sampling on {device}", ok(first == again == alone),
              f"same seed twice equal: {first == again}; each row alone equals the batch: {first == alone}; "
              f"dtype {next(model.parameters()).dtype}; other seeds differ: {draw(prompts, [1, 2, 3]) != first}")


def gpu_tests(table: Table, device: str, cache: Path) -> None:
    if device != "cuda":
        table.add("2 probes", "pytest -m gpu", "skipped", "dry run: needs CUDA")
        return
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/unit"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    table.add("2 probes", "pytest -m gpu", ok(done.returncode == 0), last, output=done.stdout[-4000:])


# ------------------------------------------------------------------------------- 3. run()
class _Recorder:
    def __init__(self):
        self.steps, self.checkpoints = [], []

    def event(self, message, *, level="info", data=None):
        pass

    def metrics(self, step, values, *, total_steps=None):
        self.steps.append((step, values))

    def checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, Path(path)))

    def should_stop(self):
        return False


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _jobs(work: Path) -> dict[str, tuple[str, dict, str]]:
    """name -> (method type, hyperparameters, training file) for one short run of each method."""
    prefs = _write(work / "prefs.jsonl", [{"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": f"Maybe {i + 1}?"}
                                          for i in range(8)])
    chat = _write(work / "chat.jsonl", [{"messages": [{"role": "user", "content": f"Say {i}."},
                                                      {"role": "assistant", "content": f"{i}."}]} for i in range(8)])
    dialogues = _write(work / "dialogues.jsonl", [{"user_turns": [f"hello {i}", "and then?", "why?"]}
                                                  for i in range(4)])
    short = {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_interval": 1}
    online = {"iterations": 1, "rollouts_per_iteration": 4, "max_new_tokens": 8, "batch_size": 2,
              "reward": {"type": "function", "name": "length_penalty"}}
    return {"dpo": ("dpo", short, prefs), "sft": ("supervised", short, chat),
            "reward model": ("reward_model", short, prefs),
            "rebel": ("rebel", online,
                      _write(work / "prompts.jsonl", [{"prompt": f"Count to {i}."} for i in range(4)])),
            "refuel": ("refuel", online, dialogues)}


def runs(table: Table, device: str, cache: Path) -> None:
    from rlhf_engine.run import run
    from rlhf_engine.spec import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="gpu-check-runs-"))
    jobs = _jobs(work)
    if device == "cuda":  # the packed batches through flex_attention too (TrainConfig.attention)
        jobs["dpo, attention flex"] = (*jobs["dpo"], "flex")
    for name, (method, hp, data, *attention) in jobs.items():
        config = TrainConfig(model="tiny-random-llama", training_file=data, output_dir=str(work / name), seed=1,
                             method={"type": method, method: {"hyperparameters": hp}},
                             attention=attention[0] if attention else "sdpa")
        recorder, started = _Recorder(), time.perf_counter()
        try:
            result = run(config, recorder, cache_dir=cache)
        except Exception as err:  # noqa: BLE001 -- one method's crash is that method's row
            table.add("3 run()", name, "FAILED", f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=8))
            continue
        losses = [v["loss"] for _, v in recorder.steps if "loss" in v]
        table.add("3 run()", name, ok(result.adapter_dir is not None and result.steps > 0),
                  f"{result.steps} steps in {time.perf_counter() - started:.1f}s; losses "
                  + ", ".join(f"{x:.4f}" for x in losses[:4]))
        if name == "dpo" and recorder.checkpoints:
            step, path = recorder.checkpoints[0]
            resumed = run(config.model_copy(update={"output_dir": str(work / "dpo-resumed")}), _Recorder(),
                          cache_dir=cache, resume_from=path)
            from safetensors.torch import load_file

            a = load_file(result.adapter_dir / "adapter_model.safetensors")
            b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
            diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
            table.add("3 run()", "dpo resumed from step %d" % step, ok(diff < 1e-5),
                      f"largest adapter difference from the uninterrupted run {diff:.1e}")


# -------------------------------------------------------------------- 4. a 1B-class packed step
def big_step(table: Table, device: str, cache: Path, dry: bool) -> None:
    import torch

    from bench.gpu_model import TOY, for_check
    from rlhf_engine.algorithms.dpo import DPO
    from rlhf_engine.attention import enable_flex
    from rlhf_engine.models import loading
    from rlhf_engine.spec import DpoHyperparameters, LoraSpec

    row = 256 if dry else 4096
    model_dir = for_check(cache, dry)
    # 4 pairs, each prompt + chosen + rejected = one full row (a 3:1 prompt share, as in chat data).
    pairs = _random_pairs([(row * 3 // 4, row // 8, row // 8)] * 4, vocab=TOY["vocab_size"] if dry else 32000)
    for flex in ((False, True) if device == "cuda" else (False,)):
        base = loading.load_causal_lm(model_dir, device=device)
        if flex:
            enable_flex(base)
        model = loading.add_lora(base, LoraSpec(r=16, alpha=32), seed=0)
        model.train()
        algo = DPO(DpoHyperparameters(beta=0.1), pairs, torch.zeros(len(pairs), 2), 0, packing=True)
        times = []
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(3):  # the first is warm-up (kernel selection, flex compilation)
            started = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss, _, tokens = algo.loss(model, list(range(len(pairs))))
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        step = sorted(times[1:])[len(times[1:]) // 2]
        table.add("4 1B step", f"4 x {row} packed DPO step ({'flex_attention' if flex else 'SDPA mask'})", "ok",
                  f"{step * 1000:.0f} ms/step, {tokens / step:,.0f} tokens/s, "
                  f"peak {'n/a (CPU)' if peak is None else f'{peak:.1f} GiB'}, loss {loss.item():.4f}",
                  step_seconds=step, peak_gib=peak, tokens=tokens)
        del model, algo
        if device == "cuda":
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- 5. vs TRL on GPU
def versus_trl(table: Table, device: str, cache: Path) -> None:
    import importlib.util

    if device != "cuda" or importlib.util.find_spec("trl") is None:
        table.add("5 vs TRL", "python -m bench.dpo_vs_trl --gpu", "skipped",
                  "dry run" if device != "cuda" else "trl is not installed (carry its wheel, bench/gpu_check.sh)")
        return
    cmd = [sys.executable, "-m", "bench.dpo_vs_trl", "--gpu", "--pairs", "32", "--batch-size", "8", "--reps", "1",
           "--epochs", "1", "--workloads", "W1", "--cache-dir", str(cache), "--tag", "dpo_vs_trl_gpu_check"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    table.add("5 vs TRL", " ".join(cmd[2:]), ok(done.returncode == 0),
              (RESULTS / "dpo_vs_trl_gpu_check.md").read_text().replace("\n", "<br>")[-1500:]
              if done.returncode == 0 else done.stderr[-800:].replace("\n", " "))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="run every section on the CPU at toy sizes")
    ap.add_argument("--cache-dir", default=os.environ.get("RLHF_MODEL_CACHE_DIR"))
    ap.add_argument("--out", default=os.environ.get("OUT") or str(RESULTS), help="folder for the table (.md, .json)")
    args = ap.parse_args(argv)

    import torch

    from bench import gpu_ranks

    device = "cuda" if torch.cuda.is_available() and not args.dry else "cpu"
    if device == "cpu" and not args.dry:
        print("no CUDA device: run with --dry for the CPU rehearsal", file=sys.stderr)
        return 2
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="gpu-check-models-"))
    table = Table()
    table.run("1 versions", versions, device)
    for probe in (weights_and_lora, packed_equals_plain, attention_in_use, seeded_sampling, gpu_tests):
        table.run("2 probes", probe, device, cache)
    table.run("3 run()", runs, device, cache)
    table.run("4 1B step", big_step, device, cache, args.dry)
    table.run("5 vs TRL", versus_trl, device, cache)
    table.run("6 ranks", gpu_ranks.section, device, cache, args.dry)

    stem, out = "gpu_check_dry" if args.dry else "gpu_check", Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"# GPU check ({'dry run on CPU' if args.dry else device})\n\n{table.markdown()}\n"
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(table.rows, indent=1, default=str))
    print(text)
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
