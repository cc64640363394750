"""DPO training throughput and memory: this engine against TRL's DPOTrainer, side by side.

    python -m bench.dpo_vs_trl                       # CPU: smollm2-135m-instruct, fp32
    python -m bench.dpo_vs_trl --pairs 8 --reps 3    # sizes / repetitions
    python -m bench.dpo_vs_trl --gpu                 # GPU variant (see bench/gpu_model.py)

Every run is a fresh subprocess (peak RSS is per run); runs alternate engine, TRL, engine, TRL
so that load from other users of the machine hits both alike; the tables give medians.
Each run trains 3 epochs; the 1-epoch figures are the same run timed to the end of epoch 1.

What is timed, both sides: from "model and tokenizer loaded" to "training finished" -- data
tokenisation, the engine's reference pass (cold cache: every engine run gets an empty cache
dir, so it pays for the reference pass), TRL's trainer construction, every optimizer step, and
the engine's per-epoch checkpoints. Process start, imports and model loading are excluded.

Same on both sides: base model and dtype (fp32 CPU / bf16 GPU), LoRA r=8 alpha=16 dropout 0 on
every linear layer of the blocks, batch size, max_length=1024, gradient checkpointing off, AdamW,
learning rate 1e-4 with linear decay and no warmup, max_grad_norm 1, beta 0.1, sigmoid loss, seed.
TRL is otherwise at its defaults (reference log-probs recomputed every step with the adapter
disabled, padding-free off, its fused LM head), with these settings fixed: bf16=False on CPU
(TRL turns bf16 on by default), gradient_checkpointing=False (TRL's default is True),
logging_steps=1 (to read the first step's loss), save_strategy="no", report_to=[], and the data
order: TRL reads the pairs in the engine's epoch-1 order through a sequential sampler, so both
sides take the same first step and their first-step log-probs and loss must agree. TRL gets the
same token ids as the engine: it is given the chat-template-rendered prompt and completion
texts (non-conversational format), and the run checks that its tokenisation equals the engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LORA = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear"}
LR, BETA, MAX_LENGTH, MAX_PROMPT = 1e-4, 0.1, 1024, 768


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gpu_peak_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _pairs(model_dir, data_path):
    from rlhf_engine.data import formats
    from rlhf_engine.data.tokenize import tokenize_pair
    from rlhf_engine.models import loading

    tokenizer = loading.load_tokenizer(model_dir)
    examples = formats.load_jsonl(data_path).examples
    pairs = [tokenize_pair(tokenizer, e, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT) for e in examples]
    return tokenizer, examples, pairs


# --------------------------------------------------------------------------------------- engine
def run_engine(args) -> dict:
    import torch

    from rlhf_engine import run as engine_run
    from rlhf_engine.model_registry import ModelEntry, ModelRegistry
    from rlhf_engine.spec import TrainConfig

    model_dir = Path(args.model_dir)
    registry = ModelRegistry({"bench": ModelEntry(name="bench", source="local", path=str(model_dir))})
    marks: list[tuple[int, float, dict]] = []
    events: list[str] = []

    class Rec:
        def event(self, message, *, level="info", data=None):
            events.append(message)

        def metrics(self, step, values, *, total_steps=None):
            if "loss" in values:
                marks.append((step, time.perf_counter(), dict(values)))

        def checkpoint(self, step, path, metrics):
            pass

        def should_stop(self):
            return False

    out = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    config = TrainConfig(model="bench", training_file=str(args.data), seed=args.seed, output_dir=str(out / "run"),
                         method={"type": "dpo", "dpo": {"hyperparameters": {
                             "n_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": LR,
                             "lr_scheduler_type": "linear", "max_length": MAX_LENGTH,
                             "max_prompt_length": MAX_PROMPT, "beta": BETA, "loss_type": "sigmoid",
                             "lora": LORA, "gradient_checkpointing": False}}})
    # Time from "model loaded": run() loads the model itself, so load it once first (warm page
    # cache) and subtract the load as run() reports it.
    loaded_at: list[float] = []
    orig_event = Rec.event

    def event(self, message, *, level="info", data=None):
        if message.startswith("Loaded ") and not loaded_at:
            loaded_at.append(time.perf_counter())
        orig_event(self, message, level=level, data=data)

    Rec.event = event
    engine_run.run(config, Rec(), registry=registry, cache_dir=out / "cache")
    t0 = loaded_at[0]
    steps_per_epoch = len(marks) // args.epochs
    return {
        "first_step_loss": marks[0][2]["loss"],
        "first_step_logps_chosen": marks[0][2]["logps/chosen"],
        "first_step_logps_rejected": marks[0][2]["logps/rejected"],
        "losses": [m[2]["loss"] for m in marks],
        "padding_fraction": statistics.mean(m[2]["padding_fraction"] for m in marks),
        "epoch1_s": marks[steps_per_epoch - 1][1] - t0,
        "total_s": marks[-1][1] - t0,
        "events": events,
        "gpu_peak_mb": _gpu_peak_mb(),
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------ TRL
def run_trl(args) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from rlhf_engine.data.tokenize import render_prompt
    from rlhf_engine.models import loading
    from rlhf_engine.spec import LoraSpec
    from rlhf_engine.train import epoch_order

    model_dir = Path(args.model_dir)
    tokenizer, examples, pairs = _pairs(model_dir, args.data)
    gpu = torch.cuda.is_available()
    base = loading.load_causal_lm(model_dir, device="cuda" if gpu else "cpu")
    t0 = time.perf_counter()

    def text_of(ex, reply):
        prompt = render_prompt(tokenizer, ex.prompt)
        full = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in (*ex.prompt, reply)], tokenize=False)
        completion = full[len(prompt):]
        end = completion.index(tokenizer.eos_token) + len(tokenizer.eos_token)
        return prompt, completion[:end]

    order = epoch_order(len(examples), args.seed, 0)
    rows = []
    for i in order:
        prompt, chosen = text_of(examples[i], examples[i].chosen)
        _, rejected = text_of(examples[i], examples[i].rejected)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    dataset = datasets.Dataset.from_list(rows)

    spec = LoraSpec(**LORA)
    lora = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, bias="none",
                      target_modules=loading.lora_target_modules(base, spec), task_type="CAUSAL_LM")
    out = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    cfg = DPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                    learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, beta=BETA,
                    loss_type=["sigmoid"], max_length=MAX_LENGTH, gradient_checkpointing=False,
                    bf16=gpu, fp16=False, use_cpu=not gpu, logging_steps=1, save_strategy="no", report_to=[],
                    seed=args.seed, disable_tqdm=True, dataloader_num_workers=0)

    marks: list[tuple[int, float]] = []
    logs: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            marks.append((state.global_step, time.perf_counter()))

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                logs_copy = dict(logs)
                logs_copy["step"] = state.global_step
                logs_list.append(logs_copy)

    logs_list = logs

    class Sequential(DPOTrainer):  # the engine's epoch-1 order; no compute changes
        def _get_train_sampler(self, *a, **kw):
            return SequentialSampler(self.train_dataset)

    trainer = Sequential(model=base, args=cfg, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora, callbacks=[Clock()])
    # TRL must see exactly the engine's token ids.
    mismatches = len(order) - len(trainer.train_dataset)  # TRL drops pairs whose prompt fills max_length
    for k, i in enumerate(order[:len(trainer.train_dataset)]):
        row = trainer.train_dataset[k]
        p = pairs[i]
        mismatches += (row["prompt_ids"] != p.prompt or row["chosen_ids"] != p.chosen
                       or row["rejected_ids"] != p.rejected)
    trainer.train()
    steps_per_epoch = len(marks) // args.epochs
    first = logs[0]
    return {
        "first_step_loss": first["loss"],
        "first_step_logps_chosen": first.get("logps/chosen"),
        "first_step_logps_rejected": first.get("logps/rejected"),
        "losses": [entry["loss"] for entry in logs],
        "token_id_mismatches": mismatches,
        "epoch1_s": marks[steps_per_epoch - 1][1] - t0,
        "total_s": marks[-1][1] - t0,
        "gpu_peak_mb": _gpu_peak_mb(),
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------- driver
def child(args) -> None:
    result = run_engine(args) if args.child == "engine" else run_trl(args)
    result["peak_rss_mb"] = _peak_rss_mb()
    Path(args.out).write_text(json.dumps(result))


def _workload_stats(model_dir, data_path) -> dict:
    _, _, pairs = _pairs(model_dir, data_path)
    prompt = sum(len(p.prompt) for p in pairs)
    completions = sum(len(p.chosen) + len(p.rejected) for p in pairs)
    return {"pairs": len(pairs), "pair_tokens": 2 * prompt + completions, "unique_tokens": prompt + completions,
            "prompt_share": 2 * prompt / (2 * prompt + completions),
            "mean_prompt": prompt / len(pairs), "mean_completion": completions / (2 * len(pairs))}


def _versions() -> dict:
    import peft
    import torch
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__}


def _machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--gpu", action="store_true", help="1B-class random-init model, bf16 (needs CUDA)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--cache-dir", default=os.environ.get("RLHF_MODEL_CACHE_DIR", "/tmp/mc"))
    ap.add_argument("--tag", default=None, help="results file stem (default dpo_vs_trl_cpu / _gpu)")
    # internal: one run in this process
    ap.add_argument("--child", choices=["engine", "trl"])
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--summarise", metavar="WORKDIR",
                    help="rebuild the tables from the per-run JSON files a (possibly interrupted) run left in WORKDIR")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.summarise:
        return resummarise(args)

    if args.model_dir is None:
        if args.gpu:
            from bench.gpu_model import build

            args.model_dir = str(build(Path(args.cache_dir) / "bench-llama-1b-random"))
        else:
            from rlhf_engine.model_registry import ModelRegistry
            from rlhf_engine.models import loading

            args.model_dir = str(loading.materialise(ModelRegistry.load().get("smollm2-135m-instruct"),
                                                     Path(args.cache_dir)))
    from bench import workloads

    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    started = time.time()
    machine, versions = _machine(), _versions()
    runs: list[dict] = []
    stats = {}
    for name in args.workloads.split(","):
        data = workloads.write(name, args.pairs, args.seed, work / f"{name}.jsonl")
        stats[name] = _workload_stats(args.model_dir, data)
    for rep in range(args.reps):
        for name in args.workloads.split(","):
            data = work / f"{name}.jsonl"
            order = ("engine", "trl") if rep % 2 == 0 else ("trl", "engine")
            for system in order:
                out = work / f"{name}-{system}-{rep}.json"
                cmd = [sys.executable, "-m", "bench.dpo_vs_trl", "--child", system, "--data", str(data),
                       "--out", str(out), "--model-dir", args.model_dir, "--pairs", str(args.pairs),
                       "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(args.seed)]
                t = time.time()
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"})
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                    raise SystemExit(f"{system} run failed on {name}")
                res = json.loads(out.read_text())
                res.pop("events", None)
                res.update({"system": system, "workload": name, "rep": rep, "wall_process_s": time.time() - t})
                runs.append(res)
                print(f"[{name} rep {rep}] {system:6s} epoch1 {res['epoch1_s']:.1f}s total {res['total_s']:.1f}s "
                      f"rss {res['peak_rss_mb']:.0f}MB loss0 {res['first_step_loss']:.5f}", flush=True)

    summary = summarise(runs, stats, args)
    result = {"benchmark": "dpo_vs_trl", "device": "gpu" if args.gpu else "cpu", "machine": machine,
              "versions": versions, "settings": settings(args), "workloads": stats, "runs": runs,
              "summary": summary, "elapsed_s": time.time() - started,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"dpo_vs_trl_{'gpu' if args.gpu else 'cpu'}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


def resummarise(args) -> None:
    """Tables from the run files of an interrupted benchmark (only workloads with both systems)."""
    import re

    work = Path(args.summarise)
    if args.model_dir is None:
        args.model_dir = str(Path(args.cache_dir) / "smollm2-135m-instruct")
    runs, stats = [], {}
    for f in sorted(work.glob("W*-*-*.json")):
        name, system, rep = re.match(r"(W\d)-(engine|trl)-(\d+)\.json", f.name).groups()
        res = json.loads(f.read_text())
        res.pop("events", None)
        res.update({"system": system, "workload": name, "rep": int(rep)})
        runs.append(res)
    complete = sorted({r["workload"] for r in runs if r["system"] == "engine"}
                      & {r["workload"] for r in runs if r["system"] == "trl"})
    runs = [r for r in runs if r["workload"] in complete]
    for name in complete:
        stats[name] = _workload_stats(args.model_dir, work / f"{name}.jsonl")
    args.reps = max(r["rep"] for r in runs) + 1
    result = {"benchmark": "dpo_vs_trl", "device": "cpu", "machine": _machine(), "versions": _versions(),
              "settings": settings(args), "workloads": stats, "runs": runs, "summary": summarise(runs, stats, args),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "note": f"summarised from {work}"}
    stem = args.tag or "dpo_vs_trl_cpu"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


def settings(args) -> dict:
    from rlhf_engine.spec import TrainConfig

    packing = TrainConfig.model_fields["packing"].default  # run_engine's config keeps the default
    return {"model_dir": args.model_dir, "pairs": args.pairs, "batch_size": args.batch_size, "epochs": args.epochs,
            "reps": args.reps, "seed": args.seed, "lora": LORA, "learning_rate": LR, "beta": BETA,
            "max_length": MAX_LENGTH, "dtype": "bf16" if args.gpu else "fp32", "gradient_checkpointing": False,
            "trl_overrides": {"bf16": args.gpu, "gradient_checkpointing": False, "logging_steps": 1,
                              "save_strategy": "no", "report_to": [], "sampler": "sequential, engine epoch-1 order"},
            "engine": {"packing": packing, "reference": "computed once (cold cache)"}}


def summarise(runs, stats, args) -> dict:
    out = {}
    for name, st in stats.items():
        row = {}
        for system in ("engine", "trl"):
            rs = [r for r in runs if r["workload"] == name and r["system"] == system]
            e1 = statistics.median(r["epoch1_s"] for r in rs)
            e3 = statistics.median(r["total_s"] for r in rs)
            row[system] = {
                "epoch1_s": e1, "total_s": e3,
                "pairs_per_s_1ep": st["pairs"] / e1, "pairs_per_s_3ep": st["pairs"] * args.epochs / e3,
                "tokens_per_s_1ep": st["pair_tokens"] / e1, "tokens_per_s_3ep": st["pair_tokens"] * args.epochs / e3,
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                "gpu_peak_mb": statistics.median(r["gpu_peak_mb"] for r in rs) if rs[0]["gpu_peak_mb"] else None,
                "first_step_loss": rs[0]["first_step_loss"],
                "first_step_logps_chosen": rs[0]["first_step_logps_chosen"],
                "runs": len(rs),
            }
        e, t = row["engine"], row["trl"]
        row["ratio"] = {"pairs_per_s_1ep": e["pairs_per_s_1ep"] / t["pairs_per_s_1ep"],
                        "pairs_per_s_3ep": e["pairs_per_s_3ep"] / t["pairs_per_s_3ep"],
                        "peak_rss": e["peak_rss_mb"] / t["peak_rss_mb"]}
        if e["gpu_peak_mb"] and t["gpu_peak_mb"]:
            row["ratio"]["gpu_peak"] = e["gpu_peak_mb"] / t["gpu_peak_mb"]
        row["first_step_loss_abs_diff"] = abs(e["first_step_loss"] - t["first_step_loss"])
        if e["first_step_logps_chosen"] is not None and t["first_step_logps_chosen"] is not None:
            row["first_step_logps_chosen_abs_diff"] = abs(e["first_step_logps_chosen"] - t["first_step_logps_chosen"])
        row["trl_token_id_mismatches"] = max(r.get("token_id_mismatches", 0) for r in runs
                                             if r["workload"] == name and r["system"] == "trl")
        out[name] = row
    return out


def markdown(result) -> str:
    m, v, s = result["machine"], result["versions"], result["settings"]
    mem = "peak GPU MB" if result["device"] == "gpu" else "peak RSS MB"
    lines = [
        f"## DPO training: engine vs TRL DPOTrainer ({result['device'].upper()}, {result['finished']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"
        + (f", {m['gpu']}" if m.get("gpu") else "")
        + (f"; load average at start {tuple(round(x, 1) for x in m['load_average_at_start'])}"
           if m.get("load_average_at_start") else ""),
        f"Versions: python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
        f"peft {v['peft']}",
        f"Settings: {Path(s['model_dir']).name}, {s['dtype']}, LoRA r={s['lora']['r']} alpha={s['lora']['alpha']} "
        f"all-linear, batch {s['batch_size']}, max_length {s['max_length']}, {s['pairs']} pairs x {s['epochs']} "
        f"epochs, gradient checkpointing off, seed {s['seed']}; medians of {s['reps']} alternated runs each.",
        "",
        "| workload | pairs | pair tokens | prompt share | system | pairs/s 1 ep | pairs/s 3 ep | tokens/s 1 ep | "
        f"tokens/s 3 ep | {mem} | first-step loss | first-step logps/chosen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["summary"].items():
        st = result["workloads"][name]
        for system in ("engine", "trl"):
            r = row[system]
            memv = r["gpu_peak_mb"] if result["device"] == "gpu" else r["peak_rss_mb"]
            lines.append(
                f"| {name} | {st['pairs']} | {st['pair_tokens']} | {st['prompt_share']:.0%} | {system} | "
                f"{r['pairs_per_s_1ep']:.3f} | {r['pairs_per_s_3ep']:.3f} | {r['tokens_per_s_1ep']:.0f} | "
                f"{r['tokens_per_s_3ep']:.0f} | {memv:.0f} | {r['first_step_loss']:.6f} | "
                f"{r['first_step_logps_chosen']:.4f} |")
    lines += ["", "| workload | pairs/s ratio 1 ep (target >= 1.3 W1) | pairs/s ratio 3 ep (target >= 2) | "
              "memory ratio (target <= 0.7) | first-step loss diff | TRL token-id mismatches |",
              "|---|---|---|---|---|---|"]
    for name, row in result["summary"].items():
        ra = row["ratio"]
        memr = ra.get("gpu_peak", ra["peak_rss"])
        lines.append(f"| {name} | {ra['pairs_per_s_1ep']:.2f}x | {ra['pairs_per_s_3ep']:.2f}x | {memr:.2f}x | "
                     f"{row['first_step_loss_abs_diff']:.1e} | {row['trl_token_id_mismatches']} |")
    lines += ["", "tokens/s counts each pair as prompt+chosen+prompt+rejected tokens (the same count for both "
              "systems, padding excluded); pairs/s over 3 epochs counts every pair once per epoch.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
