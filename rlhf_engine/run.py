"""Run one training job: the engine's single entry point for the CLI and the worker.

    config (TrainConfig) -> load model + data -> algorithm -> train.fit -> adapter on disk

Heavy imports happen here, never at package import.
"""

from __future__ import annotations

import time
from pathlib import Path

from rlhf_engine.callbacks import Reporter
from rlhf_engine.data import formats
from rlhf_engine.data.pairs import tokenize_examples
from rlhf_engine.model_registry import ModelRegistry
from rlhf_engine.outcome import JobInputError, RunResult
from rlhf_engine.spec import TrainConfig

__all__ = ["JobInputError", "RunResult", "run"]



def run(config: TrainConfig, reporter: Reporter, *, registry: ModelRegistry | None = None,
        cache_dir: Path | None = None, resume_from: Path | None = None, resolve_reward_job=None) -> RunResult:
    """resolve_reward_job(job_id) -> Path: artifacts dir of a finished reward_model job (holding
    `adapter/`), for online methods whose reward source is `{"type": "job"}`; None disables those."""
    from transformers.utils import logging as hf_logging

    from rlhf_engine import precision as precisions
    from rlhf_engine.export import save_adapter
    from rlhf_engine.models import loading
    from rlhf_engine.train import fit

    hf_logging.disable_progress_bar()
    registry = registry or ModelRegistry.load()
    method, hp = config.method, config.method.hyperparameters
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    model_dir = loading.materialise(registry.get(config.model), cache_dir)
    precision = precisions.decide(config.precision, loading.pick_device())  # for every forward of the job
    if method.type == "reward_model":  # a sequence classifier, not a causal LM: its own loader
        if config.init_adapters:
            raise JobInputError("a reward model starts from a registry model, not from a fine-tuned one")
        from rlhf_engine.algorithms.reward_model import run_reward_model

        return run_reward_model(config, model_dir, reporter, precision, cache_dir=cache_dir, resume_from=resume_from)
    online = method.type in ("rebel", "refuel")
    tokenizer = loading.load_tokenizer(model_dir)
    base = loading.load_causal_lm(model_dir, dtype=precision.weights, device=precision.device)
    base = loading.merge_adapters(base, config.init_adapters)  # a chained job: the model it continues
    if config.attention == "flex":
        from rlhf_engine.attention import enable_flex

        try:
            enable_flex(base)
        except ValueError as err:
            raise JobInputError(str(err)) from None
    if hp.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    lora = hp.lora
    if online and lora.dropout:
        # log pi_t (collection, eval mode) and the training forward must be one function, or the
        # step-0 log-ratio is dropout noise instead of 0: these methods train without it.
        reporter.event(f"LoRA dropout {lora.dropout} is turned off: {method.type} compares the policy with "
                       "log pi_t computed without dropout", level="warn")
        lora = lora.model_copy(update={"dropout": 0.0})
    model = loading.add_lora(base, lora, seed=config.seed)
    reporter.event(f"Loaded {config.model} on {precision.device} ({precision.tag}) in "
                   f"{time.perf_counter() - started:.1f}s",
                   data={"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})

    if online:
        from rlhf_engine.algorithms.online import run_online

        return run_online(config, model, tokenizer, model_dir, reporter, registry=registry, precision=precision,
                          cache_dir=cache_dir, resume_from=resume_from, resolve_reward_job=resolve_reward_job)
    if method.type in ("dpo_last_turn", "dpo_multi_turn"):  # DPO on pairs of base-model dialogues
        from rlhf_engine.algorithms.dialogue_dpo import run_dialogue_dpo

        return run_dialogue_dpo(config, model, tokenizer, model_dir, reporter, registry=registry, precision=precision,
                                cache_dir=cache_dir, resume_from=resume_from, resolve_reward_job=resolve_reward_job)

    train_set = formats.load_jsonl(config.training_file).examples
    eval_set = formats.load_jsonl(config.validation_file).examples if config.validation_file else []
    pairs = tokenize_examples(tokenizer, train_set, hp, reporter, "training")
    eval_pairs = tokenize_examples(tokenizer, eval_set, hp, reporter, "validation") if eval_set else []
    pad_id = tokenizer.pad_token_id

    if method.type == "dpo":
        from rlhf_engine import reference
        from rlhf_engine.algorithms.dpo import DPO

        t0 = time.perf_counter()
        weights = [model_dir, *config.init_adapters]  # what the reference is: the model the job starts from
        ref, hit = reference.load_or_compute(model, weights, pairs, pad_id, cache_dir, precision)
        eval_ref = (reference.load_or_compute(model, weights, eval_pairs, pad_id, cache_dir, precision)[0]
                    if eval_pairs else None)
        reporter.event(f"Reference log-probs {'loaded from cache' if hit else 'computed'} for {len(pairs)} pairs "
                       f"in {time.perf_counter() - t0:.1f}s")
        algo = DPO(hp, pairs, ref.float(), pad_id, eval_pairs, eval_ref.float() if eval_ref is not None else None)
    elif method.type == "supervised":
        from rlhf_engine.algorithms.supervised import SFT

        algo = SFT(pairs, pad_id, eval_pairs)
    else:
        raise JobInputError(f"method {method.type!r} is not supported by this engine build")

    reporter.event(f"Training {method.type} on {algo.num_examples} examples for {hp.epochs} epoch(s)")
    result = fit(model, algo, hp, seed=config.seed, reporter=reporter, out_dir=out_dir,
                 resume_from=resume_from, precision=precision)
    if result.stopped:
        return RunResult(None, result.steps, result.trained_tokens, True, result.final_metrics)
    adapter = save_adapter(model, out_dir / "adapter", config.model, stacked_on=config.init_adapters)
    return RunResult(adapter, result.steps, result.trained_tokens, False, result.final_metrics)
